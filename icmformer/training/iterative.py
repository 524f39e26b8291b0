"""Iterative click training: the next click from the current prediction's errors.

The official trainer (``ISTrainer.batch_forward``, ``max_num_next_clicks=3``; ``OFFICIAL.md``
"Iterative training") draws ``num_iters`` uniformly in ``0..3`` per batch, runs that many forward
passes without gradient (net in ``eval()``), and after each pass adds one click per sample with
``get_next_points``. This module provides both pieces, model-independent:

* :func:`sample_num_iters` -- ``num_iters`` in ``0..max_num_next_clicks`` (inclusive);
* :func:`add_next_clicks` -- one click per sample from the error regions of a batch;
* :func:`next_click` -- the same for one ``H x W`` prediction (numpy);
* :func:`keep_first_click` -- reduce samples to their first positive click (the evaluation's start).

The rule (``mode="official"``, the default) is the official ``get_next_points``:

1. ``fn = (gt == 1) & (prob < 0.49)``, ``fp = (gt == 0) & (prob > 0.49)`` (ignore pixels, label
   ``-1``, are in neither; the official code puts ignore pixels into ``fp``, we never click them);
2. both masks are padded by one zero pixel (the image border counts as region border) and
   measured with ``cv2.distanceTransform(DIST_L2, 5)`` (the 5x5-mask approximation, not the
   exact transform the evaluation clicker uses), then the padding is cropped;
3. the click is positive iff ``max(fn_dt) > max(fp_dt)`` (ties -> negative);
4. its position is uniform among the pixels with ``dt > max / 2`` of the chosen map.
   A perfect prediction (both maps empty) gives no click.

``mode="center_border"`` (an option, from the issue's reading of the paper, "the next click
combines the error region's centre and a random point near its border"): the sign is decided as
above; then with probability ``center_prob`` the click goes to the region's centre (uniform among
the pixels where ``dt`` equals its maximum), otherwise to a uniform pixel of the outer band
``0 < dt <= max / 2``; if that band is empty (regions one or two pixels thick) the centre is used.

Slots: clicks use the ``B x 2P x 3`` layout of :mod:`icmformer.data.points_sampler` (rows
``0..P-1`` positives, ``P..2P-1`` negatives, padding ``(-1, -1, -1)``). A new click goes into the
first padding row of its half. If that half is full, it replaces row ``P - step`` of the half
(``step`` = the 1-based iteration number), which is where the official code always writes
(``24 - k`` / ``48 - k``); since disks are merged by ``min``/``any`` over rows, the row order has
no effect on the model.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import cv2
import numpy as np
import torch

NEXT_CLICK_MODES = ("official", "center_border")


class NextClick(NamedTuple):
    """A click from :func:`next_click`: row ``y``, column ``x``, positive or negative."""

    y: int
    x: int
    is_positive: bool


def sample_num_iters(rng: np.random.Generator, max_num_next_clicks: int = 3) -> int:
    """Number of click-adding forward passes for one batch: uniform in ``0..max_num_next_clicks``."""
    if max_num_next_clicks < 0:
        raise ValueError(f"max_num_next_clicks must be >= 0, got {max_num_next_clicks}")
    return int(rng.integers(0, max_num_next_clicks + 1))


def _padded_dt(mask: np.ndarray) -> np.ndarray:
    padded = np.pad(mask.astype(np.uint8), 1)
    return cv2.distanceTransform(padded, cv2.DIST_L2, 5)[1:-1, 1:-1]


def error_distance_maps(prob: np.ndarray, gt: np.ndarray, thresh: float = 0.49) -> tuple[np.ndarray, np.ndarray]:
    """Distance maps of the false-negative and false-positive regions (``fn_dt``, ``fp_dt``).

    Args:
        prob: ``H x W`` probabilities.
        gt: ``H x W`` labels ``1``/``0``/``-1`` (ignore pixels belong to neither region).
        thresh: the official 0.49.
    """
    if prob.shape != gt.shape or prob.ndim != 2:
        raise ValueError(f"prob {prob.shape} and gt {gt.shape} must both be H x W of the same size")
    fn = (gt == 1) & (prob < thresh)
    fp = (gt == 0) & (prob > thresh)
    return _padded_dt(fn), _padded_dt(fp)


def next_click(
    prob: np.ndarray,
    gt: np.ndarray,
    rng: np.random.Generator,
    *,
    thresh: float = 0.49,
    mode: str = "official",
    center_prob: float = 0.5,
) -> NextClick | None:
    """The next training click for one prediction, or ``None`` when there is no error.

    See the module docstring for the rule of each ``mode``.
    """
    if mode not in NEXT_CLICK_MODES:
        raise ValueError(f"mode must be one of {NEXT_CLICK_MODES}, got {mode!r}")
    fn_dt, fp_dt = error_distance_maps(np.asarray(prob, dtype=np.float32), np.asarray(gt), thresh)
    fn_max, fp_max = float(fn_dt.max()), float(fp_dt.max())
    is_positive = fn_max > fp_max
    dt, dmax = (fn_dt, fn_max) if is_positive else (fp_dt, fp_max)
    if dmax <= 0:
        return None
    if mode == "official":
        candidates = np.argwhere(dt > dmax / 2.0)
    elif rng.random() < center_prob:
        candidates = np.argwhere(dt == dmax)
    else:
        candidates = np.argwhere((dt > 0) & (dt <= dmax / 2.0))
        if len(candidates) == 0:
            candidates = np.argwhere(dt == dmax)
    y, x = candidates[int(rng.integers(len(candidates)))]
    return NextClick(int(y), int(x), bool(is_positive))


def _slot(labels: torch.Tensor, lo: int, p: int, step: int) -> int:
    free = (labels[lo : lo + p] == -1).nonzero()
    if len(free) > 0:
        return lo + int(free[0])
    return lo + max(p - step, 0)


def _check_clicks(clicks: torch.Tensor, batch: int | None = None) -> None:
    """One-line error unless ``clicks`` is ``B x 2P x 3`` (with ``B == batch`` when given)."""
    if clicks.ndim != 3 or clicks.shape[2] != 3 or clicks.shape[1] % 2 or batch not in (None, clicks.shape[0]):
        with_b = "" if batch is None else f" with B = {batch}"
        raise ValueError(f"clicks must be B x 2P x 3{with_b}, got {tuple(clicks.shape)}")


def keep_first_click(clicks: torch.Tensor, keep: Sequence[bool] | np.ndarray) -> torch.Tensor:
    """Samples ``b`` with ``keep[b]`` keep only their first positive click (row 0); every other row
    becomes padding. The evaluation starts so (one click at the object's centre, no negatives);
    training on it makes the iterative passes follow the evaluation's click sequence.

    Args:
        clicks: ``B x 2P x 3`` click tensor (layout of the module docstring).
        keep: ``B`` booleans.

    Returns a new tensor; the other samples are unchanged.
    """
    _check_clicks(clicks)
    keep = torch.as_tensor(np.asarray(keep, dtype=bool), device=clicks.device)
    if keep.shape != (clicks.shape[0],):
        raise ValueError(f"keep must have {clicks.shape[0]} entries (one per sample), got {tuple(keep.shape)}")
    out = clicks.clone()
    has_first = out[:, 0, 2] == 1
    sel = keep & has_first
    out[sel, 1:] = -1.0
    return out


def add_next_clicks(
    prob: torch.Tensor,
    gt: torch.Tensor,
    clicks: torch.Tensor,
    rng: np.random.Generator,
    *,
    thresh: float = 0.49,
    mode: str = "official",
    center_prob: float = 0.5,
    step: int = 1,
) -> torch.Tensor:
    """Add one click per sample from the current prediction's errors (no gradient).

    Args:
        prob: ``B x 1 x H x W`` probabilities (``sigmoid(logits)``) of the current pass.
        gt: ``B x 1 x H x W`` labels ``1``/``0``/``-1``.
        clicks: ``B x 2P x 3`` click tensor (layout of the module docstring).
        rng: random generator for the click positions.
        thresh, mode, center_prob: see :func:`next_click`.
        step: 1-based number of this iterative pass; only used when a half is full.

    Returns:
        A new click tensor (same shape, dtype and device); samples without error are unchanged.
    """
    if prob.ndim != 4 or prob.shape[1] != 1:
        raise ValueError(f"prob must be B x 1 x H x W, got {tuple(prob.shape)}")
    if gt.shape != prob.shape:
        raise ValueError(f"gt {tuple(gt.shape)} must match prob {tuple(prob.shape)}")
    _check_clicks(clicks, batch=prob.shape[0])
    p = clicks.shape[1] // 2
    with torch.no_grad():
        prob_np = prob.detach().float().cpu().numpy()[:, 0]
        gt_np = gt.detach().cpu().numpy()[:, 0]
        out = clicks.detach().clone()
        labels = out[..., 2].cpu()
        for b in range(prob_np.shape[0]):
            c = next_click(prob_np[b], gt_np[b], rng, thresh=thresh, mode=mode, center_prob=center_prob)
            if c is None:
                continue
            row = _slot(labels[b], 0 if c.is_positive else p, p, step)
            out[b, row, 0] = float(c.y)
            out[b, row, 1] = float(c.x)
            out[b, row, 2] = 1.0 if c.is_positive else 0.0
            labels[b, row] = out[b, row, 2].cpu()
    return out
