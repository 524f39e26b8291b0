"""Readers of the interactive-segmentation benchmark sets, and of a generic image/mask folder.

Every reader is built from a data root (``get_dataset("GrabCut", data_root)`` reads
``data_root/GrabCut``; ``path=`` gives the dataset folder directly), lists its images at
construction, and loads one image with all its instance masks per ``dataset[i]`` as a
:class:`~icmformer.data.sample.Sample`. ``len(dataset)`` counts images, ``dataset.num_instances``
objects (each one NoC sample); ``dataset.instance_ids(i)`` gives the ids of image ``i`` without
decoding the image.

Mask values follow RITM's readers exactly, so NoC is comparable with published numbers:

- GrabCut: ``data_GT/`` + ``boundary_GT/``; first channel ``== 128`` -> -1 (ignore band),
  ``> 128`` -> 1, anything else (0) -> 0.
- Berkeley: ``images/`` + ``masks/``; ``max over colour channels > 0`` -> 1.
- DAVIS: ``img/`` + ``gt/``; ``max over colour channels > 0`` -> 1.
- COCO_MVal: ``img/`` + ``gt/``; ``max over colour channels > 0`` -> 1.
- SBD: ``SBD/dataset/{img,inst}`` + ``val.txt``; one instance per non-zero id of
  ``GTinst.Segmentation``.
- PascalVOC: ``JPEGImages/``, ``SegmentationObject/``, ``ImageSets/Segmentation/val.txt``; one
  instance per palette id, 255 -> -1 (ignore).
- folder: ``img/`` + ``gt/``; see :class:`FolderDataset`.

Masks are decoded as OpenCV does in RITM (palette PNGs are converted to colour first), so the
"max over colour channels > 0" rule counts DAVIS's void pixels (palette 255, 160 px in
``195.png``) and Berkeley's few stray non-white pixels (at most 3 per mask) as object, as RITM
does. Images are read with OpenCV as well and converted to RGB (grayscale JPEGs become 3
channels), which gives the same pixels as RITM.

Bad input raises ``FileNotFoundError`` / ``ValueError`` naming the file: a missing dataset folder
(with what is expected where), an image that cannot be decoded, a mask whose size differs from its
image, an image without a mask. Masks without an image and files that are not images are reported
with a warning and counted in ``dataset.warnings``. Masks stored in a lossy format (JPEG) are refused, and images
above the pixel limit are refused before decoding (:mod:`icmformer.data.imageio`). An empty mask (no object pixel) is an error
in user folders; in a benchmark set it is a warning, counted, and the instance is left out (none
of the shared GrabCut/Berkeley/DAVIS/COCO_MVal masks is empty).
"""
from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from icmformer.data.imageio import (  # noqa: F401 (re-exported: the readers' public names)
    IMAGE_EXTENSIONS,
    MASK_EXTENSIONS,
    read_image,
    read_mask_color,
    read_mask_values,
)
from icmformer.data.sample import Sample


class DatasetWarning(UserWarning):
    """A data problem that does not stop the evaluation (it is counted in ``dataset.warnings``)."""


# ------------------------------------------------------------------------------- file readers
# One reader for the package (icmformer.data.imageio): a pixel limit checked from the header before
# decoding, OpenCV pixels as RITM, and lossy (JPEG) masks refused since they are ground truth.
def binary_from_color(m: np.ndarray) -> np.ndarray:
    """RITM's Berkeley/DAVIS/COCO_MVal rule: any non-zero colour channel is object."""
    return (m.max(axis=2) > 0).astype(np.int32)


def grabcut_from_color(m: np.ndarray) -> np.ndarray:
    """RITM's GrabCut rule on the first channel: 128 -> -1 (ignore), > 128 -> 1, else 0."""
    v = m[:, :, 0].astype(np.int32)
    out = np.zeros(v.shape, dtype=np.int32)
    out[v > 128] = 1
    out[v == 128] = -1
    return out


def _is_image_file(p: Path, exts: tuple[str, ...]) -> bool:
    return p.is_file() and not p.name.startswith(".") and p.suffix.lower() in exts


def _require_dir(path: Path, dataset: str, expected: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(
            f"{dataset}: folder {path} not found; expected {expected}"
        )
    return path


# ------------------------------------------------------------------------------- base class
class BaseDataset:
    """Common behaviour: image list, warnings, ``num_instances``, iteration."""

    name: str = "dataset"
    #: sub-folder names of ``data_root`` tried in order
    subdirs: tuple[str, ...] = ()
    #: a benchmark set: empty masks are warnings, not errors
    benchmark: bool = True
    #: the expected layout, for error messages
    layout: str = ""

    def __init__(self) -> None:
        self.warnings: list[str] = []
        self._ids_cache: dict[int, list[str]] = {}

    @classmethod
    def locate(cls, data_root: str | Path) -> Path:
        """The dataset folder inside ``data_root`` (the first existing of :attr:`subdirs`)."""
        data_root = Path(data_root)
        if not data_root.is_dir():
            raise FileNotFoundError(
                f"{cls.name}: data root {data_root} not found; expected {', '.join(str(data_root / s) for s in cls.subdirs)} "
                f"with {cls.layout}"
            )
        for s in cls.subdirs:
            if (data_root / s).is_dir():
                return data_root / s
        raise FileNotFoundError(
            f"{cls.name}: no dataset folder in {data_root}; expected "
            f"{' or '.join(str(data_root / s) for s in cls.subdirs)} with {cls.layout}"
        )

    def _check_size(self, what: str, mask_path, mask_shape: tuple, image_path, image_shape: tuple) -> None:
        """``ValueError`` naming both files unless the mask is as large as its image."""
        if tuple(mask_shape) != tuple(image_shape):
            raise ValueError(
                f"{self.name}: {what} {mask_path} is {mask_shape[1]}x{mask_shape[0]} (WxH) but its image "
                f"{image_path} is {image_shape[1]}x{image_shape[0]}"
            )

    def resolve_root(self, data_root: str | Path | None, path: str | Path | None) -> Path:
        """``path`` as given, else this dataset's folder under ``data_root`` (:meth:`locate`)."""
        if path is None:
            if data_root is None:
                raise ValueError(f"{self.name}: give data_root or path")
            path = self.locate(data_root)
        return Path(path)

    def _files_by_stem(self, folder: Path, extensions: tuple[str, ...], what: str) -> dict[str, Path]:
        """``stem -> path`` of the ``what`` files (by extension) in ``folder``: hidden files are
        skipped, other files warned about; two files with one stem raise ``ValueError``."""
        found: dict[str, Path] = {}
        for p in sorted(folder.iterdir()):
            if p.name.startswith("."):
                continue
            if not _is_image_file(p, extensions):
                self.warn(f"ignored {p}: not {'an' if what[0] in 'aeiou' else 'a'} {what} file")
                continue
            if p.stem in found:
                raise ValueError(f"{self.name}: two {what}s with the stem {p.stem!r}: {found[p.stem]} and {p}")
            found[p.stem] = p
        return found

    def warn(self, message: str) -> None:
        if message in self.warnings:
            return
        self.warnings.append(message)
        warnings.warn(f"{self.name}: {message}", DatasetWarning, stacklevel=3)

    # subclasses implement these
    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def load(self, index: int) -> Sample:  # pragma: no cover - abstract
        raise NotImplementedError

    def _instance_ids(self, index: int) -> list[str]:  # pragma: no cover - abstract
        raise NotImplementedError

    def image_name(self, index: int) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_index(self, index: int) -> int:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"{self.name}: index {index} out of range for {n} images")
        return index % n

    def __getitem__(self, index: int) -> Sample:
        index = self._check_index(index)
        sample = self.load(index)
        self._ids_cache[index] = list(sample.instance_ids)
        return sample

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def instance_ids(self, index: int) -> list[str]:
        """The instance ids of image ``index`` (reads at most its mask file, not the image)."""
        index = self._check_index(index)
        if index not in self._ids_cache:
            self._ids_cache[index] = self._instance_ids(index)
        return self._ids_cache[index]

    @property
    def num_instances(self) -> int:
        """The number of objects (NoC samples) in the dataset."""
        return sum(len(self.instance_ids(i)) for i in range(len(self)))

    def _empty(self, path: Path, instance: str) -> None:
        msg = f"mask {path} has no object pixel for instance {instance}"
        if not self.benchmark:
            raise ValueError(f"{self.name}: {msg}; remove the file or fix the mask")
        self.warn(msg + "; instance left out")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, images={len(self)})"


# ------------------------------------------------------------------------------- paired folders
class PairedFolderDataset(BaseDataset):
    """One mask per image, paired by file stem; one object per image (RITM layout)."""

    image_dir = "img"
    mask_dir = "gt"
    mask_rule: Callable[[np.ndarray], np.ndarray] = staticmethod(binary_from_color)

    def __init__(self, data_root: str | Path | None = None, path: str | Path | None = None) -> None:
        super().__init__()
        self.root = self.resolve_root(data_root, path)
        expected = f"{self.image_dir}/ and {self.mask_dir}/ ({self.layout})"
        img_dir = _require_dir(self.root / self.image_dir, self.name, expected)
        mask_dir = _require_dir(self.root / self.mask_dir, self.name, expected)
        images = self._files_by_stem(img_dir, IMAGE_EXTENSIONS, "image")
        masks = self._files_by_stem(mask_dir, MASK_EXTENSIONS + IMAGE_EXTENSIONS, "mask")
        if not images:
            raise FileNotFoundError(f"{self.name}: no images in {img_dir}")
        missing = [images[s] for s in images if s not in masks]
        if missing:
            raise FileNotFoundError(
                f"{self.name}: {len(missing)} image(s) without a mask in {mask_dir} (paired by file stem), "
                f"e.g. {missing[0]}"
            )
        for s in masks:
            if s not in images:
                self.warn(f"mask {masks[s]} has no image with the same stem in {img_dir}; not used")
        self.image_paths = [images[s] for s in images]
        self.mask_paths = [masks[s] for s in images]

    def __len__(self) -> int:
        return len(self.image_paths)

    def image_name(self, index: int) -> str:
        return self.image_paths[index].stem

    def _instance_ids(self, index: int) -> list[str]:
        return [self.image_name(index)]

    def read_mask(self, index: int) -> np.ndarray:
        return type(self).mask_rule(read_mask_color(self.mask_paths[index]))

    def load(self, index: int) -> Sample:
        img_path, mask_path = self.image_paths[index], self.mask_paths[index]
        image = read_image(img_path)
        mask = self.read_mask(index)
        self._check_size("mask", mask_path, mask.shape, img_path, image.shape[:2])
        name = self.image_name(index)
        masks, paths, ids = [mask], [mask_path], [name]
        if not (mask == 1).any():
            self._empty(mask_path, name)
            masks, paths, ids = [], [], []
        return Sample(image=image, masks=masks, name=name, image_path=img_path, mask_paths=paths, instance_ids=ids)


class GrabCutDataset(PairedFolderDataset):
    """GrabCut (50 images, one object each). ``boundary_GT`` masks: 255 object, 0 background,
    128 an unknown band along the boundary, read as -1 (ignore) as RITM does (first channel:
    ``== 128`` -> -1, ``> 128`` -> 1, else 0)."""

    name = "GrabCut"
    subdirs = ("GrabCut",)
    image_dir = "data_GT"
    mask_dir = "boundary_GT"
    layout = "images in data_GT/ and masks (same stem, .bmp) in boundary_GT/"
    mask_rule = staticmethod(grabcut_from_color)


class BerkeleyDataset(PairedFolderDataset):
    """Berkeley (100 instances on 96 pictures; 4 images are duplicated under the names of extra
    masks). Object = ``max over colour channels > 0``, which makes the handful of stray
    non-white pixels (e.g. (255, 0, 255)) object as in RITM."""

    name = "Berkeley"
    subdirs = ("Berkeley",)
    image_dir = "images"
    mask_dir = "masks"
    layout = "images in images/ and masks (same stem, .png) in masks/"


class DavisDataset(PairedFolderDataset):
    """DAVIS (345 frames, one object each). The palette masks are converted to colour and every
    non-zero pixel is object: the union of all DAVIS ids, and, as in RITM, also the 160 void
    (palette 255) pixels of ``195.png``."""

    name = "DAVIS"
    subdirs = ("DAVIS",)
    layout = "images in img/ and palette masks (same stem, .png) in gt/"


class CocoMValDataset(PairedFolderDataset):
    """COCO_MVal (800 instances). Object = ``max over colour channels > 0`` (the masks are 0/255)."""

    name = "COCO_MVal"
    subdirs = ("COCO_MVal",)
    layout = "images in img/ and masks (same stem, .png) in gt/"


# ------------------------------------------------------------------------------- SBD
def read_sbd_instances(path: str | Path) -> np.ndarray:
    """The instance-id map ``GTinst.Segmentation`` of an SBD ``inst/*.mat`` file (int32)."""
    from scipy.io import loadmat

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SBD instance file not found: {path}")
    try:
        mat = loadmat(str(path))
        seg = mat["GTinst"]["Segmentation"][0][0]
    except (KeyError, ValueError, TypeError, IndexError, OSError) as exc:
        raise ValueError(f"cannot read GTinst.Segmentation from {path}: {exc}") from exc
    seg = np.asarray(seg)
    if seg.ndim != 2:
        raise ValueError(f"{path}: GTinst.Segmentation must be a 2-D id map, got shape {seg.shape}")
    return seg.astype(np.int32)


def _ids_of(idmap: np.ndarray, exclude: tuple[int, ...] = (0,)) -> list[int]:
    return [int(v) for v in np.unique(idmap) if int(v) not in exclude]


class _SplitListDataset(BaseDataset):
    """A benchmark of an image folder, a folder of instance-id maps and a split list of image ids
    (SBD, PASCAL VOC): one instance per id of an image's map other than ``excluded_ids``, with
    instance ids ``"<image id>#<id>"``. Subclasses set the folders and read a map (``_id_map``)."""

    image_dir, image_ext, mask_dir, mask_ext = "", "", "", ""
    mask_what, map_what = "mask", "mask"  # in messages: the missing file / the mis-sized map
    excluded_ids: tuple[int, ...] = (0,)

    def split_list(self, split: str) -> Path:
        raise NotImplementedError

    def __init__(self, data_root: str | Path | None = None, split: str = "val", path: str | Path | None = None) -> None:
        super().__init__()
        self.root = self.resolve_root(data_root, path)
        self.split = split
        _require_dir(self.root / self.image_dir, self.name, self.layout)
        _require_dir(self.root / self.mask_dir, self.name, self.layout)
        split_file = self.root / self.split_list(split)
        if not split_file.is_file():
            raise FileNotFoundError(f"{self.name}: split list {split_file} not found; expected one image id per line")
        self.names = [ln.strip() for ln in split_file.read_text().splitlines() if ln.strip()]
        if not self.names:
            raise ValueError(f"{self.name}: split list {split_file} is empty")
        for n in self.names:
            if not self._image_path(n).is_file():
                raise FileNotFoundError(f"{self.name}: image {self._image_path(n)} (listed in {split_file}) not found")
            if not self._mask_file(n).is_file():
                raise FileNotFoundError(f"{self.name}: image {n} (listed in {split_file}) has no {self.mask_what} {self._mask_file(n)}")

    def __len__(self) -> int:
        return len(self.names)

    def image_name(self, index: int) -> str:
        return self.names[index]

    def _image_path(self, name: str) -> Path:
        return self.root / self.image_dir / f"{name}{self.image_ext}"

    def _mask_file(self, name: str) -> Path:
        return self.root / self.mask_dir / f"{name}{self.mask_ext}"

    def _mask_path(self, index: int) -> Path:
        return self._mask_file(self.names[index])

    def _id_map(self, index: int) -> np.ndarray:
        raise NotImplementedError

    def _instance_mask(self, values: np.ndarray, i: int) -> np.ndarray:
        return (values == i).astype(np.int32)

    def _instance_ids(self, index: int) -> list[str]:
        ids = _ids_of(self._id_map(index), self.excluded_ids)
        if not ids:
            self._empty(self._mask_path(index), self.names[index])
        return [f"{self.names[index]}#{i}" for i in ids]

    def load(self, index: int) -> Sample:
        name = self.names[index]
        img_path, mask_path = self._image_path(name), self._mask_path(index)
        image = read_image(img_path)
        values = self._id_map(index)
        self._check_size(self.map_what, mask_path, values.shape, img_path, image.shape[:2])
        ids = _ids_of(values, self.excluded_ids)
        if not ids and index not in self._ids_cache:
            self._empty(mask_path, name)
        return Sample(
            image=image, masks=[self._instance_mask(values, i) for i in ids], name=name, image_path=img_path,
            mask_paths=[mask_path] * len(ids), instance_ids=[f"{name}#{i}" for i in ids],
        )


class SBDDataset(_SplitListDataset):
    """SBD (Hariharan et al.) evaluation split: ``dataset/img/<id>.jpg``,
    ``dataset/inst/<id>.mat`` (MATLAB struct ``GTinst.Segmentation``, an instance-id map) and the
    split list ``dataset/<split>.txt``. One instance per non-zero id, as RITM's
    ``SBDEvaluationDataset``; instance ids are ``"<image id>#<id>"``."""

    name = "SBD"
    subdirs = ("SBD/dataset", "SBD")
    layout = "img/*.jpg, inst/*.mat and val.txt"
    image_dir, image_ext, mask_dir, mask_ext = "img", ".jpg", "inst", ".mat"
    mask_what, map_what = "instance mask", "instance map"

    def split_list(self, split: str) -> Path:
        return Path(f"{split}.txt")

    def _id_map(self, index: int) -> np.ndarray:
        return read_sbd_instances(self._mask_path(index))


# ------------------------------------------------------------------------------- PASCAL VOC
class PascalVOCDataset(_SplitListDataset):
    """PASCAL VOC 2012 segmentation split: ``JPEGImages/<id>.jpg``, ``SegmentationObject/<id>.png``
    (palette indices: 0 background, 1..N instances, 255 the void boundary) and
    ``ImageSets/Segmentation/<split>.txt``. One instance per palette id other than 0 and 255; the
    255 pixels are -1 (ignore) in every instance mask, as RITM's reader (which does the same with
    the grey value 220 of the void colour). Instance ids are ``"<image id>#<palette id>"``."""

    name = "PascalVOC"
    subdirs = ("PascalVOC", "VOC2012", "VOCdevkit/VOC2012")
    layout = "JPEGImages/, SegmentationObject/ and ImageSets/Segmentation/val.txt"
    image_dir, image_ext, mask_dir, mask_ext = "JPEGImages", ".jpg", "SegmentationObject", ".png"
    excluded_ids = (0, 255)

    def split_list(self, split: str) -> Path:
        return Path("ImageSets") / "Segmentation" / f"{split}.txt"

    def _id_map(self, index: int) -> np.ndarray:
        values, mode = read_mask_values(self._mask_path(index))
        if mode not in ("P", "L"):
            raise ValueError(
                f"PascalVOC: {self._mask_path(index)} must be a palette (or single-channel) PNG of instance ids, got mode {mode}"
            )
        return values

    def _instance_mask(self, values: np.ndarray, i: int) -> np.ndarray:
        m = (values == i).astype(np.int32)
        m[values == 255] = -1
        return m


# ------------------------------------------------------------------------------- generic folder
_SUFFIX = re.compile(r"^(?P<stem>.+)_(?P<k>\d+)$")


class FolderDataset(BaseDataset):
    """A user folder: ``img/`` with images and ``gt/`` with masks.

    Pairing rule (file stems, extensions free and mixed):

    - ``gt/<stem>.<ext>`` whose stem equals an image's stem belongs to that image;
    - otherwise ``gt/<stem>_<k>.<ext>`` (``k`` a non-negative integer) is instance ``k`` of image
      ``<stem>`` (always a binary mask, one object);
    - a mask file that matches no image is an error, and so is an image with no mask file.

    How a ``gt/<stem>.<ext>`` file is read (``mask_mode``):

    - ``"binary"``: one object, ``max over colour channels > 0`` (as the benchmark readers);
    - ``"instances"``: an instance-id map: every distinct non-zero value is one object (palette
      PNGs: palette indices, index 255 is ignore (-1) in every instance, VOC/DAVIS style);
    - ``"auto"`` (default): an instance-id map if the file is a palette PNG or a single-channel
      image whose largest value is below 128 (ids such as 0/1/2/..., a 0/1 binary mask gives the
      same single object either way); otherwise binary (e.g. 0/255 masks, colour masks).

    Instance ids: ``"<stem>"`` for a binary ``<stem>.<ext>``, ``"<stem>#<value>"`` for each object
    of an id map, ``"<stem>_<k>"`` for an instance file. An image whose masks hold no object pixel
    is an error.
    """

    name = "folder"
    subdirs = (".",)
    benchmark = False
    layout = "img/ (images) and gt/ (masks, same stems)"

    def __init__(
        self, data_root: str | Path | None = None, path: str | Path | None = None, mask_mode: str = "auto",
        name: str | None = None,
    ) -> None:
        super().__init__()
        if mask_mode not in ("auto", "binary", "instances"):
            raise ValueError(f"mask_mode must be 'auto', 'binary' or 'instances', got {mask_mode!r}")
        self.mask_mode = mask_mode
        root = Path(path if path is not None else data_root if data_root is not None else ".")
        if name is not None:
            self.name = name
        self.root = root
        img_dir = _require_dir(root / "img", self.name, self.layout)
        gt_dir = _require_dir(root / "gt", self.name, self.layout)
        images = self._files_by_stem(img_dir, IMAGE_EXTENSIONS, "image")
        if not images:
            raise FileNotFoundError(f"{self.name}: no images in {img_dir}")
        whole: dict[str, Path] = {}
        parts: dict[str, list[tuple[int, Path]]] = {}
        for p in sorted(gt_dir.iterdir()):
            if p.name.startswith("."):
                continue
            if not _is_image_file(p, MASK_EXTENSIONS + IMAGE_EXTENSIONS):
                self.warn(f"ignored {p}: not a mask file")
                continue
            if p.stem in images:
                if p.stem in whole:
                    raise ValueError(f"{self.name}: two masks with the stem {p.stem!r}: {whole[p.stem]} and {p}")
                whole[p.stem] = p
                continue
            m = _SUFFIX.match(p.stem)
            if m is None or m["stem"] not in images:
                raise ValueError(
                    f"{self.name}: mask {p} matches no image in {img_dir} (expected gt/<stem>.png or "
                    "gt/<stem>_<k>.png for an image img/<stem>.*)"
                )
            parts.setdefault(m["stem"], []).append((int(m["k"]), p))
        missing = [images[s] for s in images if s not in whole and s not in parts]
        if missing:
            raise FileNotFoundError(
                f"{self.name}: {len(missing)} image(s) without a mask in {gt_dir}, e.g. {missing[0]} "
                f"(expected gt/{missing[0].stem}.png or gt/{missing[0].stem}_<k>.png)"
            )
        self.image_paths = list(images.values())
        self._whole = whole
        self._parts = {s: sorted(v, key=lambda kp: (kp[0], kp[1].name)) for s, v in parts.items()}
        for s, v in self._parts.items():
            ks = [k for k, _ in v]
            if len(set(ks)) != len(ks):
                raise ValueError(f"{self.name}: image {s} has two instance masks with the same number: {[str(p) for _, p in v]}")

    def __len__(self) -> int:
        return len(self.image_paths)

    def image_name(self, index: int) -> str:
        return self.image_paths[index].stem

    def _read_whole(self, path: Path) -> tuple[list[np.ndarray], list[str]]:
        """Masks and id suffixes ("" for binary) of a ``<stem>.<ext>`` file."""
        if self.mask_mode == "binary":
            return [binary_from_color(read_mask_color(path))], [""]
        values, mode = read_mask_values(path)
        is_map = mode == "P" or (mode in ("L", "I", "I;16", "I;16B", "I;16L") and values.max(initial=0) < 128)
        if self.mask_mode == "instances":
            if mode not in ("P", "L", "I", "I;16", "I;16B", "I;16L"):
                raise ValueError(f"{self.name}: {path} must be a single-channel or palette id map for mask_mode='instances', got mode {mode}")
            is_map = True
        if not is_map:
            return [binary_from_color(read_mask_color(path))], [""]
        ignore = values == 255 if mode == "P" else np.zeros(values.shape, bool)
        ids = _ids_of(values, (0, 255) if mode == "P" else (0,))
        masks = []
        for i in ids:
            m = (values == i).astype(np.int32)
            m[ignore] = -1
            masks.append(m)
        return masks, [f"#{i}" for i in ids]

    def _entries(self, index: int) -> list[tuple[Path, str]]:
        stem = self.image_name(index)
        out = []
        if stem in self._whole:
            out.append((self._whole[stem], "whole"))
        out += [(p, f"_{k}") for k, p in self._parts.get(stem, [])]
        return out

    def _collect(self, index: int, shape: tuple[int, int] | None) -> tuple[list[np.ndarray], list[Path], list[str]]:
        stem = self.image_name(index)
        masks, paths, ids = [], [], []
        for path, kind in self._entries(index):
            if kind == "whole":
                ms, suffixes = self._read_whole(path)
                if not ms:
                    raise ValueError(f"{self.name}: mask {path} has no object pixel (no non-zero id)")
            else:
                ms, suffixes = [binary_from_color(read_mask_color(path))], [kind]
            for m, suf in zip(ms, suffixes):
                if shape is not None:
                    self._check_size("mask", path, m.shape, self.image_paths[index], shape)
                if not (m == 1).any():
                    self._empty(path, stem + suf)
                masks.append(m)
                paths.append(path)
                ids.append(stem + suf)
        return masks, paths, ids

    def _instance_ids(self, index: int) -> list[str]:
        return self._collect(index, None)[2]

    def load(self, index: int) -> Sample:
        img_path = self.image_paths[index]
        image = read_image(img_path)
        masks, paths, ids = self._collect(index, image.shape[:2])
        return Sample(image=image, masks=masks, name=self.image_name(index), image_path=img_path, mask_paths=paths, instance_ids=ids)


# ------------------------------------------------------------------------------- registry
DATASETS: dict[str, type[BaseDataset]] = {
    "GrabCut": GrabCutDataset,
    "Berkeley": BerkeleyDataset,
    "DAVIS": DavisDataset,
    "COCO_MVal": CocoMValDataset,
    "SBD": SBDDataset,
    "PascalVOC": PascalVOCDataset,
    "folder": FolderDataset,
}


def list_datasets() -> list[str]:
    """Names accepted by :func:`get_dataset`."""
    return list(DATASETS)


def get_dataset(name: str, data_root: str | Path, **kwargs) -> BaseDataset:
    """Build a reader: ``get_dataset("GrabCut", "data")`` reads ``data/GrabCut``.

    ``"folder"`` reads ``data_root`` itself (``img/`` + ``gt/``). Names are case-insensitive.
    Keyword arguments go to the reader (``path=`` the dataset folder itself, ``split=`` for
    SBD/PascalVOC, ``mask_mode=`` for folders).
    """
    key = {k.lower(): k for k in DATASETS}.get(str(name).lower())
    if key is None:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    return DATASETS[key](data_root, **kwargs)
