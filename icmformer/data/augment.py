"""Training augmentation: albumentations pipelines applied to an image and its masks together.

Variants (``AugmentConfig.variant``):

``cocolvis`` -- the official COCO+LVIS configs (``OFFICIAL.md`` "Augmentation")::

    UniformRandomResize(0.75, 1.40 for ViT-B / 1.25 for Swin)  -> A.RandomScale
    HorizontalFlip(p=0.5)
    PadIfNeeded(crop, border 0) ; RandomCrop(crop)
    RandomBrightnessContrast((-0.25, 0.25), (-0.15, 0.4), p=0.75) ; RGBShift(10, 10, 10, p=0.75)

``sbd`` -- the official SBD configs::

    UniformRandomResize(0.75, 1.25)
    Flip (old albumentations: p=0.5, then one of horizontal / vertical / both) ; RandomRotate90
    ShiftScaleRotate(shift 0.03, scale 0, rotate +-3 deg, border 0, p=0.75)  -> A.Affine
    then as cocolvis (pad, crop, colour jitter)

``paper`` -- the paper's text: random horizontal flip, rotation and resize with scale
0.75-1.25, pad-if-needed and random crop, plus the official colour jitter. The paper gives no
rotation range; we use ``rotate_limit`` (default +-3 deg, p=0.75, the official SBD magnitude).

``none`` -- only pad-if-needed and random crop to the training size (tests, debugging).

``scale_range`` overrides the variant's default resize range.

``object_crop_prob`` (default 0, the official behaviour) replaces, with that probability, the
resize + pad + crop steps by an *object-centred* crop: a square box around a random object's
bounding box, ``object_crop_expand`` (uniform in ``[lo, hi]``) times its longer side, shifted at
random as far as the object stays whole inside it, cut out (zero padding where it leaves
the image) and resized to the crop size; flip and colour jitter follow as usual. It shows the
network the framing that the evaluation's zoom-in produces (the object filling ``1/1.4`` of the
crop), which a short training from scratch (the CPU demo) otherwise sees rarely.

``whole_image_prob`` (default 0) replaces, with that probability, the same steps by the *whole
image* resized to the crop size, aspect ratio not kept: the framing of the evaluation's first
click, where the predictor squashes the full image to the network's input size. Flip and colour
jitter follow as for an object crop. One uniform draw per sample picks the framing: below
``object_crop_prob`` an object crop, then up to ``object_crop_prob + whole_image_prob`` the whole
image, else the variant's resize + crop (so configs without ``whole_image_prob`` draw exactly as
before). Differences from RITM's own
transforms: ``UniformRandomResize`` becomes ``A.RandomScale`` (same uniform scale law; the
output size may differ from RITM's ``round(h * scale)`` by a pixel), ``ShiftScaleRotate`` becomes
the equivalent ``A.Affine`` (albumentations 2 deprecates the former).

Masks. :class:`Augmenter` accepts integer masks ``H x W`` or ``H x W x C`` with values in
``-1 .. 65534`` (``1/0/-1`` object masks, or RITM-style layers of instance ids). They are shifted
by +1 into ``uint16`` so that ``-1`` survives, every geometric step uses nearest-neighbour
interpolation for masks, and the shift is undone afterwards; colour steps touch only the image.
Pixels created by padding or rotation (they have no source pixel) are reported in ``filled`` and
set to ``mask_pad_value`` in the mask: ``0`` (background) by default, as RITM pads masks with 0
(the black padding is a legitimate "not the object" region), or ``-1`` to ignore them.

Seeding: ``Augmenter(image, mask, seed)`` re-seeds the pipeline (albumentations 2's
``Compose.set_random_seed``) before each call, so the same seed always gives the same output,
independently of what ran before (what the per-index dataset RNG needs).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import albumentations as A
import cv2
import numpy as np

VARIANTS = ("cocolvis", "sbd", "paper", "none")
DEFAULT_SCALE_RANGE = {"cocolvis": (0.75, 1.40), "sbd": (0.75, 1.25), "paper": (0.75, 1.25), "none": None}
_MASK_MAX = np.iinfo(np.uint16).max - 1  # 65534: values are shifted by +1 into uint16


@dataclass
class AugmentConfig:
    """What :func:`build_augmentation` builds.

    Attributes:
        variant: ``cocolvis``, ``sbd``, ``paper`` or ``none`` (see the module docstring).
        crop_size: ``[H, W]`` of the training crop.
        scale_range: ``[lo, hi]`` of the random resize, ``None`` = the variant's default
            (cocolvis 0.75-1.40, the official ViT-B value; sbd and paper 0.75-1.25).
        rotate_limit: rotation range in degrees for the ``paper`` variant.
        color_jitter: add the official RandomBrightnessContrast + RGBShift.
        mask_pad_value: mask value of padded / rotated-in pixels (``0`` as RITM, or ``-1``).
    """

    variant: str = "cocolvis"
    crop_size: list[int] = field(default_factory=lambda: [448, 448])
    scale_range: list[float] | None = None
    rotate_limit: float = 3.0
    color_jitter: bool = True
    mask_pad_value: int = 0
    object_crop_prob: float = 0.0
    object_crop_expand: list[float] = field(default_factory=lambda: [1.2, 2.0])
    whole_image_prob: float = 0.0

    def validate(self) -> "AugmentConfig":
        if self.variant not in VARIANTS:
            raise ValueError(f"augment variant must be one of {VARIANTS}, got {self.variant!r}")
        if len(self.crop_size) != 2 or min(self.crop_size) < 1:
            raise ValueError(f"crop_size must be [H, W] with positive values, got {list(self.crop_size)}")
        if self.scale_range is not None and (
            len(self.scale_range) != 2 or not 0 < self.scale_range[0] <= self.scale_range[1]
        ):
            raise ValueError(f"scale_range must be [lo, hi] with 0 < lo <= hi, got {list(self.scale_range)}")
        if self.mask_pad_value not in (0, -1):
            raise ValueError(f"mask_pad_value must be 0 (background) or -1 (ignore), got {self.mask_pad_value}")
        if not 0.0 <= self.object_crop_prob <= 1.0:
            raise ValueError(f"object_crop_prob must lie in [0, 1], got {self.object_crop_prob}")
        if not 0.0 <= self.whole_image_prob <= 1.0:
            raise ValueError(f"whole_image_prob must lie in [0, 1], got {self.whole_image_prob}")
        if self.object_crop_prob + self.whole_image_prob > 1.0 + 1e-9:
            raise ValueError(
                f"object_crop_prob + whole_image_prob must not exceed 1, got {self.object_crop_prob} + {self.whole_image_prob}"
            )
        if len(self.object_crop_expand) != 2 or not 1.0 <= self.object_crop_expand[0] <= self.object_crop_expand[1]:
            raise ValueError(f"object_crop_expand must be [lo, hi] with 1 <= lo <= hi, got {list(self.object_crop_expand)}")
        return self

    def resolved_scale_range(self) -> tuple[float, float] | None:
        if self.scale_range is not None:
            return (float(self.scale_range[0]), float(self.scale_range[1]))
        return DEFAULT_SCALE_RANGE[self.variant]


def _color_jitter() -> list[A.BasicTransform]:
    return [
        A.RandomBrightnessContrast(brightness_limit=(-0.25, 0.25), contrast_limit=(-0.15, 0.4), p=0.75),
        A.RGBShift(r_shift_limit=(-10, 10), g_shift_limit=(-10, 10), b_shift_limit=(-10, 10), p=0.75),
    ]


def _resize(scale_range: tuple[float, float]) -> A.BasicTransform:
    lo, hi = scale_range
    return A.RandomScale(
        scale_limit=(lo - 1.0, hi - 1.0), interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST, p=1.0
    )


def build_transforms(cfg: AugmentConfig) -> list[A.BasicTransform]:
    """The albumentations steps of a variant (before wrapping in ``A.Compose``)."""
    cfg.validate()
    h, w = int(cfg.crop_size[0]), int(cfg.crop_size[1])
    scale = cfg.resolved_scale_range()
    steps: list[A.BasicTransform] = []
    if cfg.variant == "cocolvis":
        steps += [_resize(scale), A.HorizontalFlip(p=0.5)]
    elif cfg.variant == "sbd":
        steps += [
            _resize(scale),
            A.OneOf(
                [
                    A.HorizontalFlip(p=1.0),
                    A.VerticalFlip(p=1.0),
                    A.Sequential([A.HorizontalFlip(p=1.0), A.VerticalFlip(p=1.0)], p=1.0),
                ],
                p=0.5,
            ),
            A.RandomRotate90(p=1.0),
            A.Affine(
                translate_percent=(-0.03, 0.03), scale=1.0, rotate=(-3, 3), interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_NEAREST, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, p=0.75,
            ),
        ]
    elif cfg.variant == "paper":
        steps += [
            _resize(scale),
            A.HorizontalFlip(p=0.5),
            A.Rotate(
                limit=(-cfg.rotate_limit, cfg.rotate_limit), interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_NEAREST, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, p=0.75,
            ),
        ]
    elif scale is not None:  # "none" with an explicit scale range
        steps.append(_resize(scale))
    steps += [
        A.PadIfNeeded(min_height=h, min_width=w, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0),
        A.RandomCrop(height=h, width=w),
    ]
    if cfg.color_jitter and cfg.variant != "none":
        steps += _color_jitter()
    return steps


def build_object_transforms(cfg: AugmentConfig) -> list[A.BasicTransform]:
    """The steps after an object-centred crop: the variant's flips, then colour jitter."""
    steps: list[A.BasicTransform] = []
    if cfg.variant in ("cocolvis", "paper"):
        steps.append(A.HorizontalFlip(p=0.5))
    elif cfg.variant == "sbd":
        steps += [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.25), A.RandomRotate90(p=1.0)]
    if cfg.color_jitter and cfg.variant != "none":
        steps += _color_jitter()
    return steps


def object_crop_box(
    obj: np.ndarray, rng: np.random.Generator, expand: tuple[float, float], min_side: int = 16
) -> tuple[int, int, int]:
    """A random square ``(y0, x0, side)`` around the ``True`` pixels of ``obj`` (see the module
    docstring); it may extend past the image."""
    ys, xs = np.nonzero(obj)
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    side = max(min_side, int(round(max(y1 - y0, x1 - x0) * rng.uniform(expand[0], expand[1]))))
    # shifted at random as far as the object stays whole inside the box
    my, mx = (side - (y1 - y0)) / 2, (side - (x1 - x0)) / 2
    cy = (y0 + y1) / 2 + rng.uniform(-my, my)
    cx = (x0 + x1) / 2 + rng.uniform(-mx, mx)
    return int(round(cy - side / 2)), int(round(cx - side / 2)), side


def _cut_square(a: np.ndarray, y0: int, x0: int, side: int) -> np.ndarray:
    """``a[y0:y0+side, x0:x0+side]`` with zero padding outside ``a``."""
    out = np.zeros((side, side) + a.shape[2:], a.dtype)
    h, w = a.shape[:2]
    sy0, sx0, sy1, sx1 = max(y0, 0), max(x0, 0), min(y0 + side, h), min(x0 + side, w)
    if sy1 > sy0 and sx1 > sx0:
        out[sy0 - y0: sy1 - y0, sx0 - x0: sx1 - x0] = a[sy0:sy1, sx0:sx1]
    return out


class Augmenter:
    """A seeded albumentations pipeline for (image, integer mask) pairs.

    Args:
        transform: the pipeline (``A.Compose``); masks must go through nearest-neighbour steps
            with a mask fill of 0 (the shifted value of "no source pixel").
        mask_pad_value: value given to mask pixels that were padded or rotated in.
        crop_size: the output ``(H, W)`` (informational; checked when not ``None``).
    """

    def __init__(
        self,
        transform: A.Compose,
        mask_pad_value: int = 0,
        crop_size: tuple[int, int] | None = None,
        object_transform: A.Compose | None = None,
        object_crop_prob: float = 0.0,
        object_crop_expand: tuple[float, float] = (1.2, 2.0),
        whole_image_prob: float = 0.0,
    ) -> None:
        self.transform = transform
        self.mask_pad_value = int(mask_pad_value)
        self.crop_size = tuple(crop_size) if crop_size is not None else None
        if (object_crop_prob > 0 or whole_image_prob > 0) and (object_transform is None or self.crop_size is None):
            raise ValueError("object_crop_prob > 0 or whole_image_prob > 0 needs an object_transform and a crop_size")
        self.object_transform = object_transform
        self.object_crop_prob = float(object_crop_prob)
        self.whole_image_prob = float(whole_image_prob)
        self.object_crop_expand = (float(object_crop_expand[0]), float(object_crop_expand[1]))

    def __repr__(self) -> str:
        return f"Augmenter(crop_size={self.crop_size}, mask_pad_value={self.mask_pad_value}, transform={self.transform!r})"

    def augment(
        self, image: np.ndarray, mask: np.ndarray, seed: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Augment an image and its mask(s).

        Args:
            image: ``H x W x 3`` ``uint8``.
            mask: ``H x W`` or ``H x W x C`` integers in ``-1 .. 65534``.
            seed: re-seed the pipeline first (``None``: continue the pipeline's own stream).

        Returns:
            ``(image, mask, filled)``: the augmented image (``uint8``), the mask (``int32``, same
            number of dimensions as given) and an ``H' x W'`` bool map of the pixels that came
            from padding or rotation (set to ``mask_pad_value`` in the mask).
        """
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be H x W x 3 uint8, got shape {image.shape} dtype {image.dtype}")
        if mask.shape[:2] != image.shape[:2] or mask.ndim not in (2, 3):
            raise ValueError(f"mask must be H x W or H x W x C matching the image {image.shape[:2]}, got {mask.shape}")
        if not np.issubdtype(mask.dtype, np.integer) and mask.dtype != np.bool_:
            raise ValueError(f"mask must have an integer dtype, got {mask.dtype}")
        if mask.size and (int(mask.min()) < -1 or int(mask.max()) > _MASK_MAX):
            raise ValueError(f"mask values must lie in -1..{_MASK_MAX}, got {int(mask.min())}..{int(mask.max())}")
        squeeze = mask.ndim == 2
        m = mask[..., None] if squeeze else mask
        # channel 0: "has a source pixel" (1, fill 0); channels 1..: the mask shifted by +1
        shifted = np.concatenate([np.ones(m.shape[:2] + (1,), np.uint16), (m.astype(np.int64) + 1).astype(np.uint16)], axis=2)
        out = None
        if self.object_crop_prob > 0 or self.whole_image_prob > 0:
            rng = np.random.default_rng(None if seed is None else [int(seed), 1])
            u = rng.random()
            h, w = self.crop_size
            img_c = msk_c = None
            if u < self.object_crop_prob:
                objects = m > 0
                if objects.any():
                    values = [(c, v) for c in range(m.shape[2]) for v in np.unique(m[..., c]) if v > 0]
                    c, v = values[int(rng.integers(len(values)))]
                    y0, x0, side = object_crop_box(m[..., c] == v, rng, self.object_crop_expand)
                    img_c = cv2.resize(_cut_square(image, y0, x0, side), (w, h), interpolation=cv2.INTER_LINEAR)
                    msk_c = cv2.resize(_cut_square(shifted, y0, x0, side), (w, h), interpolation=cv2.INTER_NEAREST)
            elif u < self.object_crop_prob + self.whole_image_prob:
                img_c = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
                msk_c = cv2.resize(shifted, (w, h), interpolation=cv2.INTER_NEAREST)
            if img_c is not None:
                if msk_c.ndim == 2:
                    msk_c = msk_c[..., None]
                if seed is not None:
                    self.object_transform.set_random_seed(int(seed))
                out = self.object_transform(image=np.ascontiguousarray(img_c), mask=np.ascontiguousarray(msk_c))
        if out is None:
            if seed is not None:
                self.transform.set_random_seed(int(seed))
            out = self.transform(image=np.ascontiguousarray(image), mask=shifted)
        out_mask = out["mask"]
        if out_mask.ndim == 2:  # albumentations may drop a singleton channel axis
            out_mask = out_mask[..., None]
        filled = out_mask[..., 0] == 0
        res = out_mask[..., 1:].astype(np.int32) - 1
        res[filled] = self.mask_pad_value
        if squeeze:
            res = res[..., 0]
        img = out["image"]
        if self.crop_size is not None and img.shape[:2] != self.crop_size:
            raise RuntimeError(f"augmentation produced {img.shape[:2]}, expected {self.crop_size}")
        return img, res, filled

    def __call__(self, image: np.ndarray, mask: np.ndarray, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`augment` without the ``filled`` map."""
        img, m, _ = self.augment(image, mask, seed)
        return img, m


def build_augmentation(cfg: AugmentConfig | None = None, seed: int | None = None, **kwargs) -> Augmenter:
    """Build the :class:`Augmenter` of a config (or of ``AugmentConfig(**kwargs)``).

    Example: ``build_augmentation(AugmentConfig(variant="sbd", crop_size=[448, 448]))``.
    """
    if cfg is None:
        cfg = AugmentConfig(**kwargs)
    elif kwargs:
        raise ValueError("pass either an AugmentConfig or keyword arguments, not both")
    cfg.validate()
    transform = A.Compose(build_transforms(cfg), p=1.0, seed=seed)
    crop = (int(cfg.crop_size[0]), int(cfg.crop_size[1]))
    reframe = cfg.object_crop_prob > 0 or cfg.whole_image_prob > 0
    object_transform = A.Compose(build_object_transforms(cfg), p=1.0, seed=seed) if reframe else None
    return Augmenter(
        transform, mask_pad_value=cfg.mask_pad_value, crop_size=crop, object_transform=object_transform,
        object_crop_prob=cfg.object_crop_prob, object_crop_expand=tuple(cfg.object_crop_expand),
        whole_image_prob=cfg.whole_image_prob,
    )
