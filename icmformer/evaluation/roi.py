"""Zoom-in geometry of the official evaluation predictor (OFFICIAL.md section 1e).

Pure functions on ``Roi = (rmin, rmax, cmin, cmax)`` (inclusive pixel bounds) and clicks, used by
the protocol core (:mod:`icmformer.evaluation.core`) and, for the click mapping, by the attention
views:

- :func:`update_roi`: the ROI of the next click from the previous probability map, the clicks and
  the stored ROI (candidate = bbox of ``prev > 0.5`` plus the positive clicks, expanded to
  ``centre +- 0.5 * max(1.4 * size, 200)`` with Python ``round`` and clamped; it replaces the
  stored ROI only if a positive click lies outside it or their "bbox IoU" is below 0.5);
- :func:`map_clicks`: clicks in image pixels -> rows ``(y', x', label)`` of the ``T x T`` crop.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from icmformer.evaluation.clicker import Click

Roi = tuple[int, int, int, int]  # (rmin, rmax, cmin, cmax), inclusive


def whole_image(height: int, width: int) -> Roi:
    """The ROI covering an ``height x width`` image."""
    return 0, int(height) - 1, 0, int(width) - 1


def get_bbox_from_mask(mask: np.ndarray) -> Roi:
    """Inclusive ``(rmin, rmax, cmin, cmax)`` of the True pixels of a non-empty mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise ValueError("get_bbox_from_mask: the mask is empty")
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


def expand_bbox(bbox: Roi, expansion_ratio: float = 1.4, min_crop_size: float | None = 200) -> Roi:
    """Grow a bbox about its centre to ``max(expansion_ratio * size, min_crop_size)`` per side,
    rounding with Python's ``round`` (half to even), as the official ``expand_bbox``."""
    rmin, rmax, cmin, cmax = bbox
    rcenter = 0.5 * (rmin + rmax)
    ccenter = 0.5 * (cmin + cmax)
    height = expansion_ratio * (rmax - rmin + 1)
    width = expansion_ratio * (cmax - cmin + 1)
    if min_crop_size is not None:
        height = max(height, min_crop_size)
        width = max(width, min_crop_size)
    return (
        int(round(rcenter - 0.5 * height)),
        int(round(rcenter + 0.5 * height)),
        int(round(ccenter - 0.5 * width)),
        int(round(ccenter + 0.5 * width)),
    )


def clamp_bbox(bbox: Roi, rmin: int, rmax: int, cmin: int, cmax: int) -> Roi:
    return max(rmin, bbox[0]), min(rmax, bbox[1]), max(cmin, bbox[2]), min(cmax, bbox[3])


def _segment_iou(s1: tuple[int, int], s2: tuple[int, int]) -> float:
    a, b = s1
    c, d = s2
    inter = max(0, min(b, d) - max(a, c) + 1)
    union = max(1e-6, max(b, d) - min(a, c) + 1)
    return inter / union


def bbox_iou(b1: Roi, b2: Roi) -> float:
    """The official "bbox IoU": IoU of the row intervals times IoU of the column intervals."""
    return _segment_iou(b1[:2], b2[:2]) * _segment_iou(b1[2:], b2[2:])


def check_object_roi(roi: Roi, clicks: Sequence[Click]) -> bool:
    """True iff every positive click satisfies ``rmin <= y < rmax`` and ``cmin <= x < cmax``
    (strict on the max side, as the official code)."""
    for c in clicks:
        if c.is_positive:
            y, x = c.coords
            if y < roi[0] or y >= roi[1] or x < roi[2] or x >= roi[3]:
                return False
    return True


def get_object_roi(pred_mask: np.ndarray, clicks: Sequence[Click], expansion_ratio: float = 1.4, min_crop_size: float = 200) -> Roi:
    """Candidate ROI: bbox of ``pred_mask`` plus the positive clicks, expanded and clamped."""
    mask = pred_mask.copy()
    for c in clicks:
        if c.is_positive:
            mask[int(c.coords[0]), int(c.coords[1])] = True
    h, w = mask.shape
    return clamp_bbox(expand_bbox(get_bbox_from_mask(mask), expansion_ratio, min_crop_size), 0, h - 1, 0, w - 1)


def update_roi(
    prev_mask: np.ndarray | None,
    clicks: Sequence[Click],
    stored: Roi | None,
    image_size: tuple[int, int],
    expansion_ratio: float = 1.4,
    min_crop_size: float = 200,
    recompute_thresh_iou: float = 0.5,
) -> Roi:
    """The ROI for ``clicks`` (the official ``ZoomIn.get_object_roi`` / ``_recompute``).

    ``prev_mask`` is the thresholded previous prediction (``prev_probs > 0.5``, ``H x W`` bool;
    ``None`` before the first click); ``stored`` the ROI of the previous click (``None`` at the first).
    """
    candidate = None
    if prev_mask is not None and prev_mask.any():
        candidate = get_object_roi(prev_mask, clicks, expansion_ratio, min_crop_size)
    if candidate is None:
        candidate = whole_image(*image_size)
    if stored is None or not check_object_roi(stored, clicks) or bbox_iou(candidate, stored) < recompute_thresh_iou:
        return candidate
    return stored


def map_clicks(clicks: Sequence[Click], roi: Roi, target_size: int, flip: bool = False) -> np.ndarray:
    """``N x 3`` float64 rows ``(y', x', label)`` of clicks mapped into the ``T x T`` crop of ``roi``.

    ``y' = T * (y - rmin) / (rmax - rmin + 1)``; with ``flip`` ``x'' = T - x' - 1``. Labels are 1/0,
    and -1 for rows whose two coordinates are both negative (the official ``DistMaps`` drops them).
    With no clicks a single padding row is returned.
    """
    rmin, rmax, cmin, cmax = roi
    t = target_size
    rows = []
    for c in clicks:
        y = t * (c.coords[0] - rmin) / (rmax - rmin + 1)
        x = t * (c.coords[1] - cmin) / (cmax - cmin + 1)
        if flip:
            x = t - x - 1
        label = 1.0 if c.is_positive else 0.0
        if np.float32(y) < 0 and np.float32(x) < 0:
            y, x, label = -1.0, -1.0, -1.0
        rows.append((y, x, label))
    if not rows:
        rows.append((-1.0, -1.0, -1.0))
    return np.asarray(rows, dtype=np.float64)
