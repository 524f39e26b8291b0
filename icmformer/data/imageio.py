"""The one image and mask reader of the package, with a pixel limit checked before decoding.

Every image icmformer decodes (benchmark and training sets, ``icmformer predict``, the annotation
notebook, the HTTP server) goes through :func:`read_image` (a file) or :func:`decode_image`
(bytes), so one limit protects all of them from decompression bombs: a 1 MB PNG may declare
20000 x 20000 pixels and need gigabytes once decoded. The size is read from the file header
(PIL, which reads only the header) and an image above the limit is refused with
:class:`ImageTooLargeError` (a ``ValueError``) before any pixel is decoded.

The limit (pixels, width x height) is, in order: the ``max_pixels`` argument; the environment
variable ``ICMFORMER_MAX_IMAGE_PIXELS`` (``--max-image-pixels`` of the CLI sets it, so data-loader
workers inherit it); :data:`DEFAULT_MAX_PIXELS` (40 megapixels: a 12 MP photo, 8K video frames).
``0`` means no limit.

Pixels are decoded with OpenCV as RITM does (``cv2.imdecode(..., IMREAD_COLOR)`` then RGB), so the
evaluation numbers are unchanged. Masks are ground truth: a lossy (JPEG, lossy WebP) mask turns
compression noise into object pixels, so :func:`read_mask_color`, :func:`read_mask_values` and
:func:`read_mask_raw` refuse it (``lossy="error"``, the evaluation readers) or binarise it at 128
with a :class:`LossyMaskWarning` naming the file (``lossy="threshold"``, the training readers).
"""
from __future__ import annotations

import io
import os
import struct
import warnings
from pathlib import Path

import numpy as np

__all__ = [
    "IMAGE_EXTENSIONS", "MASK_EXTENSIONS", "DEFAULT_MAX_PIXELS", "MAX_PIXELS_ENV", "ImageTooLargeError",
    "LossyMaskWarning", "max_image_pixels", "set_max_image_pixels", "probe_image", "check_image_size",
    "decode_image", "read_image", "read_mask_color", "read_mask_values", "read_mask_raw",
]  # fmt: skip

#: file extensions read as images (dataset folders, ``icmformer predict``)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
#: lossless mask formats (masks with an image extension are read too; lossy ones are checked)
MASK_EXTENSIONS = (".png", ".bmp", ".tif", ".tiff", ".gif", ".pgm", ".ppm")
DEFAULT_MAX_PIXELS = 40_000_000
MAX_PIXELS_ENV = "ICMFORMER_MAX_IMAGE_PIXELS"
HOW_TO_RAISE = f"raise it with --max-image-pixels N or the environment variable {MAX_PIXELS_ENV}=N (0: no limit)"


class ImageTooLargeError(ValueError):
    """The image declares more pixels than the limit (nothing was decoded)."""


class LossyMaskWarning(UserWarning):
    """A mask stored in a lossy format was binarised at 128."""


def max_image_pixels(value: int | None = None) -> int:
    """The pixel limit in force: ``value``, else ``$ICMFORMER_MAX_IMAGE_PIXELS``, else the default (0: none)."""
    if value is None:
        env = os.environ.get(MAX_PIXELS_ENV, "").strip()
        if not env:
            return DEFAULT_MAX_PIXELS
        try:
            value = int(float(env))
        except ValueError:
            raise ValueError(f"{MAX_PIXELS_ENV}={env!r}: expected a whole number of pixels (0: no limit)") from None
    if isinstance(value, bool) or int(value) != value or value < 0:
        raise ValueError(f"max image pixels must be a whole number >= 0 (0: no limit), got {value!r}")
    return int(value)


def set_max_image_pixels(value: int) -> None:
    """Set the limit for this process and its children (the CLI's ``--max-image-pixels``)."""
    os.environ[MAX_PIXELS_ENV] = str(max_image_pixels(value))


def _mp(n: int) -> str:
    return f"{n / 1e6:.1f} MP"


def check_image_size(height: int, width: int, what: str, max_pixels: int | None = None) -> None:
    """Raise :class:`ImageTooLargeError` when ``height x width`` exceeds the limit (or is empty)."""
    limit = max_image_pixels(max_pixels)
    if height <= 0 or width <= 0:
        raise ValueError(f"{what}: the image is empty ({width}x{height} pixels, WxH)")
    if limit and height * width > limit:
        raise ImageTooLargeError(
            f"{what}: {width}x{height} pixels (WxH, {_mp(height * width)}) is above the limit of {limit} pixels "
            f"({_mp(limit)}); {HOW_TO_RAISE}"
        )


def _lossy_format(fmt: str | None, data: bytes) -> str | None:
    if fmt in ("JPEG", "MPO", "JPEG2000"):
        return "JPEG"
    if fmt == "WEBP" and data[12:16] == b"VP8 ":  # simple lossy WebP (VP8L is lossless)
        return "lossy WebP"
    if fmt == "WEBP" and b"VP8 " in data[:4096] and b"VP8L" not in data[:4096]:  # extended, lossy bitstream
        return "lossy WebP"
    return None


def _header(data: bytes) -> tuple[int, int, str | None]:
    """``(height, width, format)`` from PIL's format plugins, which read the header only.

    Like ``Image.open`` but without its decompression-bomb check, so that the size of a huge
    image can be reported and compared with our (configurable) limit.
    """
    from PIL import Image, UnidentifiedImageError

    prefix = data[:16]
    for load_all in (False, True):
        Image.init() if load_all else Image.preinit()
        for fmt in list(Image.ID):
            factory, accept = Image.OPEN[fmt]
            ok = accept(prefix) if accept else True
            if not ok or isinstance(ok, str):
                continue
            try:
                im = factory(io.BytesIO(data), "")
            except (SyntaxError, IndexError, TypeError, ValueError, OSError, EOFError, struct.error):
                continue
            width, height = im.size
            im.close()
            return height, width, im.format
    raise UnidentifiedImageError("unknown image format")


def probe_image(data: bytes, what: str, max_pixels: int | None = None) -> tuple[int, int, str | None]:
    """``(height, width, PIL format)`` from the header only; checks the pixel limit.

    Raises ``ValueError`` when the header cannot be read and :class:`ImageTooLargeError` when
    the image is above the limit (or has no pixel).
    """
    from PIL import UnidentifiedImageError

    limit = max_image_pixels(max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            height, width, fmt = _header(data)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"cannot decode {what} (corrupt or not an image file)") from exc
    check_image_size(height, width, what, limit)
    return height, width, fmt


def decode_image(data: bytes, what: str = "image", max_pixels: int | None = None) -> np.ndarray:
    """Encoded image bytes -> ``H x W x 3`` uint8 RGB, refusing images above the pixel limit.

    The function for uploads (HTTP server, notebook widgets): ``what`` names the source in errors.
    """
    import cv2

    if not data:
        raise ValueError(f"cannot decode {what} (empty file)")
    probe_image(data, what, max_pixels)
    img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"cannot decode {what} (corrupt or not an image file)")
    return np.ascontiguousarray(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))


def _read_bytes(path: str | Path, kind: str) -> tuple[Path, bytes]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{kind} file not found: {path}")
    return path, path.read_bytes()


def read_image(path: str | Path, max_pixels: int | None = None) -> np.ndarray:
    """Read an image file as ``H x W x 3`` uint8 RGB (OpenCV decoder, as RITM; grayscale -> 3 channels)."""
    path, data = _read_bytes(path, "image")
    return decode_image(data, f"image {path}", max_pixels)


def _check_lossy(path: Path, data: bytes, fmt: str | None, lossy: str) -> bool:
    """True when the mask must be binarised (``lossy="threshold"``); raises for ``"error"``."""
    if lossy not in ("error", "threshold"):
        raise ValueError(f"lossy must be 'error' or 'threshold', got {lossy!r}")
    kind = _lossy_format(fmt, data)
    if kind is None:
        return False
    if lossy == "error":
        raise ValueError(
            f"mask {path} is stored as {kind}, a lossy format: compression noise would turn background "
            "pixels into object pixels; save the mask losslessly (PNG)"
        )
    warnings.warn(
        f"mask {path} is stored as {kind} (lossy): binarised at 128 to remove compression noise; save masks as PNG",
        LossyMaskWarning,
        stacklevel=3,
    )
    return True


def _binarise(m: np.ndarray) -> np.ndarray:
    return np.where(m >= 128, 255, 0).astype(np.uint8)


def _open_mask(path: str | Path, max_pixels: int | None, lossy: str) -> tuple[Path, bytes, str, bool]:
    """``(path, bytes, what, binarise?)`` of a mask file after the pixel-limit and lossy checks."""
    path, data = _read_bytes(path, "mask")
    what = f"mask {path}"
    if not data:
        raise ValueError(f"cannot decode {what} (corrupt or not an image file)")
    _, _, fmt = probe_image(data, what, max_pixels)
    return path, data, what, _check_lossy(path, data, fmt, lossy)


def _cv2_mask(path: str | Path, max_pixels: int | None, lossy: str, unchanged: bool) -> np.ndarray:
    import cv2

    path, data, what, threshold = _open_mask(path, max_pixels, lossy)
    m = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED if unchanged else cv2.IMREAD_COLOR)
    if m is None:
        raise ValueError(f"cannot decode {what} (corrupt or not an image file)")
    return _binarise(m) if threshold else m


def read_mask_color(path: str | Path, max_pixels: int | None = None, lossy: str = "error") -> np.ndarray:
    """Read a mask file as OpenCV's ``imread(path)`` does (``H x W x 3`` BGR uint8; palette images
    converted to their colours)."""
    return _cv2_mask(path, max_pixels, lossy, unchanged=False)


def read_mask_raw(path: str | Path, max_pixels: int | None = None, lossy: str = "error") -> np.ndarray:
    """A mask's stored values as OpenCV's ``imread(path, IMREAD_UNCHANGED)`` gives them."""
    return _cv2_mask(path, max_pixels, lossy, unchanged=True)


def read_mask_values(path: str | Path, max_pixels: int | None = None, lossy: str = "error") -> tuple[np.ndarray, str]:
    """Read a single-channel mask's raw values (palette indices for palette PNGs) with PIL.

    Returns ``(values H x W int32, PIL mode)``; colour masks return the max over channels.
    """
    from PIL import Image, UnidentifiedImageError

    path, data, what, threshold = _open_mask(path, max_pixels, lossy)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our limit was checked above
            with Image.open(io.BytesIO(data)) as im:
                mode = im.mode
                im.load()
                arr = np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"cannot decode {what} (corrupt or not an image file): {exc}") from exc
    if arr.ndim == 3:
        arr = arr[..., :3].max(axis=2)
    if threshold:
        arr = _binarise(arr)
    return arr.astype(np.int32), mode
