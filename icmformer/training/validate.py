"""Validation during training: the evaluation protocol on a held-out split.

Used to choose a recipe and to draw the "validation NoC against CPU-hours" curve without ever
touching the benchmark sets (GrabCut, Berkeley, DAVIS). The protocol is the evaluation's
(the zoom-in core of :mod:`~icmformer.evaluation.core`, without flip to halve
the cost; the first click at the object centre, each next click in the largest error region),
``max_clicks`` clicks on every instance (no early stop, so the mIoU curve is complete).

Instances: the objects of the split that cover at least ``min_area_frac`` of their image (BSDS
regions include tiny slivers that nobody would annotate with clicks), then at most
``max_instances`` of them, evenly spaced in the reader's order (deterministic).
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from icmformer.data.datasets import FolderDataset, SBDDataset
from icmformer.evaluation.batched import evaluate_batch
from icmformer.evaluation.metrics import mean_noc, miou_curve, noc_list, nof


def validation_instances(kind: str, data_root: str, split: str = "val", max_instances: int = 60,
                         min_area_frac: float = 0.01) -> list[tuple[np.ndarray, np.ndarray]]:  # fmt: skip
    """``(image, mask)`` pairs of the validation split (see the module docstring)."""
    if kind == "sbd":
        ds = SBDDataset(path=data_root, split=split)
    elif kind == "folder":
        ds = FolderDataset(path=data_root)
    else:
        raise ValueError(f"config key val.kind: must be 'sbd' or 'folder', got {kind!r}")
    items = []
    for sample in ds:
        area = sample.image.shape[0] * sample.image.shape[1]
        for m in sample.masks:
            if (m == 1).sum() >= min_area_frac * area:
                items.append((sample.image, m))
    if not items:
        raise ValueError(f"validation set {data_root} ({split}) has no instance covering {min_area_frac:.0%} of its image")
    keep = np.unique(np.linspace(0, len(items) - 1, min(max_instances, len(items))).round().astype(int))
    return [items[i] for i in keep]


def validate_model(model, kind: str, data_root: str, split: str = "val", max_instances: int = 60, max_clicks: int = 20,
                   target_size: int | None = None, per_instance: bool = False, batch_size: int = 1) -> dict[str, Any]:  # fmt: skip
    """NoC@85/90, NoF@90 and the mIoU curve of ``model`` on the validation split.

    ``per_instance=True`` adds ``noc85_each`` / ``noc90_each``: each instance's NoC, in the order of
    :func:`validation_instances`, for a paired comparison of weights (:func:`paired_noc_difference`).
    Instances run through the batched evaluator (:func:`~icmformer.evaluation.batched.evaluate_batch`,
    the protocol core that the sequential predictor drives too), ``batch_size`` per forward pass: the
    same IoUs at any batch size on CPU, less wall time at more than 1.
    """
    t0 = time.perf_counter()
    was_training = model.training
    items = validation_instances(kind, data_root, split, max_instances)
    try:
        with torch.no_grad():
            results = evaluate_batch(model, [(image, mask, i) for i, (image, mask) in enumerate(items)],
                                     batch_size=int(batch_size), max_clicks=max_clicks, zoom_in=True, flip=False,
                                     target_size=target_size)  # fmt: skip
        ious = [r.ious for r in results]
    finally:
        model.train(was_training)
    row = {
        "instances": len(items),
        "noc85": float(mean_noc(ious, 0.85, max_clicks)),
        "noc90": float(mean_noc(ious, 0.90, max_clicks)),
        "nof90": int(nof(ious, 0.90, max_clicks)),
        "miou": [round(float(v), 4) for v in miou_curve(ious, max_clicks)],
        "seconds": round(time.perf_counter() - t0, 1),
    }
    if per_instance:
        row["noc85_each"] = [int(v) for v in noc_list(ious, 0.85, max_clicks)]
        row["noc90_each"] = [int(v) for v in noc_list(ious, 0.90, max_clicks)]
    return row


def paired_noc_difference(reference: Any, candidate: Any, n_boot: int = 10000, seed: int = 0) -> dict[str, float | int]:
    """How many clicks ``candidate`` needs beyond ``reference`` on the same instances, with its noise.

    Both are per-instance NoC (``noc90_each`` of two :func:`validate_model` rows). ``mean`` is
    candidate minus reference (negative: the candidate needs fewer clicks); ``lo`` / ``hi`` the 95 %
    percentile bootstrap interval of that mean, resampling instances (seeded, so rows repeat);
    ``fewer`` / ``more`` how many instances the candidate needs fewer / more clicks on. A difference
    whose interval contains 0 is within what a different sample of instances could give.
    """
    a = np.asarray(reference, dtype=np.float64)
    b = np.asarray(candidate, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape or a.size == 0:
        raise ValueError(f"paired NoC needs two equal-length, non-empty per-instance lists, got {a.shape} and {b.shape}")
    d = b - a
    idx = np.random.default_rng(seed).integers(0, d.size, size=(n_boot, d.size))
    boot = d[idx].mean(axis=1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {"mean": float(d.mean()), "lo": float(lo), "hi": float(hi), "fewer": int((d < 0).sum()), "more": int((d > 0).sum())}
