"""Metrics of click-based interactive segmentation, computed from per-instance records.

- **IoU** (RITM ``utils.get_iou``): ``|pred & obj & valid| / |(pred | obj) & valid|`` with
  ``obj = gt == 1`` and ``valid = gt != -1``; the ratio is taken in float64 and stored as float32,
  as the official loop keeps its IoU list as a float32 array. (Both masks empty: IoU 1.0; the
  official code would produce NaN, but no benchmark instance has an empty object.)
- **NoC@t**: ``1 +`` the index of the first IoU ``>= t``, the comparison done in float32 (as the
  official code, run with NumPy 1.x value-based casting, effectively does: an IoU that rounds to
  ``float32(0.9)`` counts as reaching 0.90). Never reached: ``max_clicks`` (20), not 21.
- **NoF@t**: the number of instances whose NoC@t equals ``max_clicks``; this includes instances
  that first reach ``t`` exactly at the last click (official ``>=20@t``).
- **mIoU@k** for ``k = 1..max_clicks``: mean IoU after ``k`` clicks over all instances. An instance
  that stopped early (``stop_at_target``) carries its last IoU forward, i.e. it is assumed to stay
  at the IoU it had when it stopped.
- **SPC** (seconds per click), two ways: the official one (wall time of the whole loop, including
  data loading, the click simulator and the method, divided by the clicks made) and the method's
  own time per click; plus the simulator's time per click.

A *record* is a dict with at least ``dataset`` and ``ious`` (the IoU after each click); the
timing keys ``method_time`` / ``simulator_time`` (lists, seconds per click) and ``wall_s`` (seconds)
and ``max_clicks`` are used when present. :func:`summarize` turns records into tables, so results
can be recomputed from files without re-running any model.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from icmformer.evaluation.protocol import MAX_CLICKS

NOC_THRESHOLDS = (0.80, 0.85, 0.90)
NOF_THRESHOLDS = (0.85, 0.90)


def iou_float64(gt_mask: np.ndarray, pred_mask: np.ndarray, ignore_label: int = -1) -> float:
    """The IoU as the float64 ratio (what the official loop compares with its stop threshold)."""
    gt_mask = np.asarray(gt_mask)
    pred_mask = np.asarray(pred_mask).astype(bool, copy=False)
    if gt_mask.shape != pred_mask.shape:
        raise ValueError(f"gt_mask has shape {gt_mask.shape} but pred_mask has shape {pred_mask.shape}")
    valid = gt_mask != ignore_label
    obj = gt_mask == 1
    inter = np.count_nonzero(pred_mask & obj & valid)
    union = np.count_nonzero((pred_mask | obj) & valid)
    if union == 0:
        return 1.0
    return inter / union


def get_iou(gt_mask: np.ndarray, pred_mask: np.ndarray, ignore_label: int = -1) -> np.float32:
    """Ignore-aware IoU between a ground-truth mask (1 object, ``ignore_label`` ignore) and a
    boolean prediction, as float32."""
    return np.float32(iou_float64(gt_mask, pred_mask, ignore_label))


def _f32(thr: float) -> np.float32:
    return np.float32(thr)


def noc(ious: Sequence[float], thr: float, max_clicks: int = MAX_CLICKS) -> int:
    """Number of clicks to reach IoU ``thr`` for one instance (``max_clicks`` if never reached)."""
    arr = np.asarray(ious, dtype=np.float32)[:max_clicks]
    hit = arr >= _f32(thr)
    return int(np.argmax(hit)) + 1 if hit.any() else int(max_clicks)


def noc_list(all_ious: Iterable[Sequence[float]], thr: float, max_clicks: int = MAX_CLICKS) -> np.ndarray:
    """NoC@thr of every instance (int array)."""
    return np.array([noc(i, thr, max_clicks) for i in all_ious], dtype=np.int64)


def mean_noc(all_ious: Sequence[Sequence[float]], thr: float, max_clicks: int = MAX_CLICKS) -> float:
    """Mean NoC@thr over instances (NaN for no instances)."""
    arr = noc_list(all_ious, thr, max_clicks)
    return float(arr.mean()) if arr.size else float("nan")


def nof(all_ious: Sequence[Sequence[float]], thr: float, max_clicks: int = MAX_CLICKS) -> int:
    """NoF@thr: instances whose NoC@thr equals ``max_clicks`` (including a hit exactly at the last
    click)."""
    return int((noc_list(all_ious, thr, max_clicks) == max_clicks).sum())


def iou_at_clicks(ious: Sequence[float], max_clicks: int = MAX_CLICKS) -> np.ndarray:
    """The IoU after clicks ``1..max_clicks`` of one instance; a sequence that stopped early
    carries its last IoU forward. An empty sequence gives NaNs."""
    arr = np.asarray(ious, dtype=np.float32)[:max_clicks]
    out = np.full(max_clicks, np.nan, dtype=np.float32)
    if arr.size:
        out[: arr.size] = arr
        out[arr.size :] = arr[-1]
    return out


def miou_curve(all_ious: Sequence[Sequence[float]], max_clicks: int = MAX_CLICKS) -> np.ndarray:
    """mIoU@k for ``k = 1..max_clicks`` (float64 array of length ``max_clicks``)."""
    if len(all_ious) == 0:
        return np.full(max_clicks, np.nan)
    mat = np.stack([iou_at_clicks(i, max_clicks) for i in all_ious]).astype(np.float64)
    return mat.mean(axis=0)


def _sum_lists(records: Sequence[Mapping], key: str) -> float | None:
    if not records or any(key not in r for r in records):
        return None
    return float(sum(float(np.sum(r[key])) for r in records))


def summarize_dataset(
    records: Sequence[Mapping],
    max_clicks: int = MAX_CLICKS,
    noc_thresholds: Sequence[float] = NOC_THRESHOLDS,
    nof_thresholds: Sequence[float] = NOF_THRESHOLDS,
) -> dict:
    """Metrics of one dataset's records (see the module docstring)."""
    all_ious = [list(r["ious"]) for r in records]
    total_clicks = int(sum(len(i) for i in all_ious))
    out: dict = {
        "instances": len(records),
        "images": len({(r.get("image") or r.get("image_path") or r.get("instance_id")) for r in records}),
        "clicks": total_clicks,
        "max_clicks": int(max_clicks),
    }
    for t in noc_thresholds:
        out[f"NoC@{round(t * 100)}"] = mean_noc(all_ious, t, max_clicks)
    for t in nof_thresholds:
        out[f"NoF@{round(t * 100)}"] = nof(all_ious, t, max_clicks)
    out["mIoU@k"] = [float(v) for v in miou_curve(all_ious, max_clicks)]

    def per_click(total: float | None) -> float | None:
        return None if total is None or total_clicks == 0 else total / total_clicks

    wall = _sum_lists(records, "wall_s")
    method = _sum_lists(records, "method_time")
    sim = _sum_lists(records, "simulator_time")
    out["SPC"] = per_click(wall)  # official: whole-loop wall time / clicks made
    out["SPC_method"] = per_click(method)  # the method's own time per click
    out["simulator_s_per_click"] = per_click(sim)
    out["wall_s"] = wall
    out["method_s"] = method
    out["simulator_s"] = sim
    return out


def summarize(
    records: Iterable[Mapping],
    max_clicks: int | None = None,
    noc_thresholds: Sequence[float] = NOC_THRESHOLDS,
    nof_thresholds: Sequence[float] = NOF_THRESHOLDS,
) -> dict[str, dict]:
    """Per-dataset metrics: NoC@80/85/90, NoF@85/90, mIoU@k (k = 1..max_clicks), SPC (official
    and method-only), simulator time per click and counts.

    Args:
        records: per-instance records (each with ``dataset`` and ``ious``).
        max_clicks: the click budget; ``None`` takes it from the records' ``max_clicks`` field
            (which must agree) or 20.

    Returns:
        ``{dataset: metrics}`` in the order the datasets first appear.
    """
    records = list(records)
    if max_clicks is None:
        budgets = {int(r["max_clicks"]) for r in records if "max_clicks" in r}
        if len(budgets) > 1:
            raise ValueError(f"records mix different max_clicks values {sorted(budgets)}; pass max_clicks")
        max_clicks = budgets.pop() if budgets else 20
    by_ds: dict[str, list[Mapping]] = {}
    for r in records:
        by_ds.setdefault(str(r["dataset"]), []).append(r)
    return {
        ds: summarize_dataset(recs, max_clicks, noc_thresholds, nof_thresholds) for ds, recs in by_ds.items()
    }
