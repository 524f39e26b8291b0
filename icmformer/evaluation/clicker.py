"""The standard click simulator of interactive segmentation (RITM's ``Clicker``), bit-exact.

Each new click goes to the pixel that is farthest from the boundary of the largest error region
(OFFICIAL.md section 1e, "Next click"):

1. ``fn = gt==1 & ~pred & valid`` (missed object) and ``fp = gt!=1 & pred & valid`` (false
   alarm), where ``valid = gt != ignore_label``.
2. Both maps are padded by one pixel of zeros, so the image border counts as region boundary.
3. ``cv2.distanceTransform(uint8, cv2.DIST_L2, 0)`` (mask size 0 = the exact Euclidean distance
   to the nearest zero, float32); the padding is cropped away.
4. Both distance maps are multiplied by the not-clicked map: a pixel that was clicked before can
   never be clicked again.
5. The click is positive iff ``max(fn_dt) > max(fp_dt)`` (strict: ties, including the perfect-mask
   case ``0 == 0``, give a *negative* click).
6. Its position is the first element of ``np.where(dt == max)``: the smallest row, then the
   smallest column. For a perfect mask that is a negative click at ``(0, 0)``.

The first click uses the same function with an all-False prediction, so it lands on the interior
point of the object farthest from its boundary.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np


@dataclass(frozen=True)
class Click:
    """One click.

    Attributes:
        is_positive: ``True`` for a foreground click, ``False`` for a background click.
        coords: ``(y, x)``: row and column in pixels of the full image (ints for simulated and
            user clicks).
        index: position of the click in its sequence (0 for the first click).
    """

    is_positive: bool
    coords: tuple[int, int]
    index: int = 0

    @property
    def y(self) -> int:
        return self.coords[0]

    @property
    def x(self) -> int:
        return self.coords[1]

    def copy(self, **changes) -> "Click":
        return replace(self, **changes)

    def to_list(self) -> list:
        """``[y, x, is_positive]`` as plain JSON-friendly values."""
        return [int(self.coords[0]), int(self.coords[1]), bool(self.is_positive)]


def _check_mask(mask: np.ndarray, what: str, shape: tuple[int, int] | None = None) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"{what} must be a 2-D H x W array, got shape {mask.shape}")
    if shape is not None and mask.shape != shape:
        raise ValueError(f"{what} has shape {mask.shape} but the ground truth has shape {shape}")
    return mask


def _padded_distance(region: np.ndarray) -> np.ndarray:
    """Exact L2 distance of every pixel of ``region`` to the nearest non-region pixel, where the
    outside of the image counts as non-region (one pixel of zero padding)."""
    padded = np.pad(region.astype(np.uint8), ((1, 1), (1, 1)), mode="constant")
    dt = cv2.distanceTransform(padded, cv2.DIST_L2, 0)
    return dt[1:-1, 1:-1]


class Clicker:
    """Simulates a user who clicks at the centre of the largest error region.

    Args:
        gt_mask: ``H x W`` integer mask: ``1`` object, ``ignore_label`` ignore, anything else
            background.
        ignore_label: the value of pixels that are never clicked and never counted.
    """

    def __init__(self, gt_mask: np.ndarray, ignore_label: int = -1) -> None:
        gt_mask = _check_mask(gt_mask, "gt_mask")
        self.gt_mask = gt_mask == 1
        self.not_ignore_mask = gt_mask != ignore_label
        self.ignore_label = ignore_label
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget all clicks."""
        self._clicks: list[Click] = []
        self._not_clicked = np.ones(self.gt_mask.shape, dtype=bool)

    def __len__(self) -> int:
        return len(self._clicks)

    def get_clicks(self) -> list[Click]:
        """The clicks so far, in order (a copy of the list)."""
        return list(self._clicks)

    @property
    def shape(self) -> tuple[int, int]:
        return self.gt_mask.shape

    def add_click(self, click: Click) -> Click:
        """Append a click (its ``index`` is set to the number of clicks before it)."""
        y, x = int(click.coords[0]), int(click.coords[1])
        h, w = self.gt_mask.shape
        if not (0 <= y < h and 0 <= x < w):
            raise ValueError(f"click (y={y}, x={x}) lies outside the {h}x{w} (HxW) mask")
        click = Click(bool(click.is_positive), (y, x), len(self._clicks))
        self._clicks.append(click)
        self._not_clicked[y, x] = False
        return click

    # ------------------------------------------------------------------ simulation
    def next_click(self, pred_mask: np.ndarray) -> Click:
        """The click the simulated user would make next, given the current prediction (not added)."""
        pred = _check_mask(pred_mask, "pred_mask", self.gt_mask.shape).astype(bool)
        fn = self.gt_mask & ~pred & self.not_ignore_mask
        fp = ~self.gt_mask & pred & self.not_ignore_mask
        fn_dt = _padded_distance(fn) * self._not_clicked
        fp_dt = _padded_distance(fp) * self._not_clicked
        fn_max = fn_dt.max()
        fp_max = fp_dt.max()
        is_positive = bool(fn_max > fp_max)
        dt, dmax = (fn_dt, fn_max) if is_positive else (fp_dt, fp_max)
        ys, xs = np.where(dt == dmax)
        return Click(is_positive, (int(ys[0]), int(xs[0])), len(self._clicks))

    def make_next_click(self, pred_mask: np.ndarray) -> Click:
        """Compute the next click for ``pred_mask`` (bool ``H x W``), add it and return it."""
        return self.add_click(self.next_click(pred_mask))
