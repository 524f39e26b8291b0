"""Zoom-in aware iterative training: the framings the evaluation's zoom-in produces.

The official evaluation (``evaluation/predictor.py``) shows the model the whole image at the first
click and, from the second click on, a crop around the current prediction and the positive clicks
(``get_object_roi``: bbox expanded 1.4x, at least 200 px, kept while it still holds the clicks and
overlaps the new candidate). A model trained only on the official training crops has never seen
such crops built from its own (often poor) first mask: the crop cuts the object, and the mean IoU
*falls* from click 1 to click 2.

:func:`zoom_iterative_forward` is the official iterative forward pass (``iterative_forward``)
run on a larger *canvas* (the augmented training crop, e.g. 448 px) instead of the network input
(e.g. 224 px). Every pass sees a *view* of the canvas resized to the network input: the whole
canvas before the first zoom, then, for a fraction ``zoom_prob`` of the samples, the ROI the
evaluation would choose from the previous prediction and clicks (the same geometry functions,
with ``min_crop_size`` in canvas pixels). Predictions are pasted back into the canvas (zeros
outside the view, as the evaluation does), the next click is simulated on the whole canvas (so
it can fall outside the view, and a positive one outside moves the ROI), and the loss is taken on
the last view. The other samples keep the whole-canvas view, which is the first-click framing.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from icmformer.evaluation.clicker import Click
from icmformer.evaluation.roi import update_roi
from icmformer.training.iterative import add_next_clicks, sample_num_iters
from icmformer.training.step import compact_clicks

Roi = tuple[int, int, int, int]


def crop_views(x: torch.Tensor, rois: list[Roi], size: int, mode: str = "bilinear") -> torch.Tensor:
    """Crop ``x[b, :, rmin:rmax+1, cmin:cmax+1]`` for every sample and resize it to ``size x size``
    (bilinear with ``align_corners=True`` as the evaluation, or ``nearest`` for labels)."""
    out = []
    for b, (rmin, rmax, cmin, cmax) in enumerate(rois):
        crop = x[b : b + 1, :, rmin : rmax + 1, cmin : cmax + 1]
        if mode == "nearest":
            out.append(F.interpolate(crop, size=(size, size), mode="nearest"))
        else:
            out.append(F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=True))
    return torch.cat(out, dim=0)


def paste_views(probs: torch.Tensor, rois: list[Roi], canvas: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`crop_views` for probability maps: each view resized to its ROI and pasted
    into a zero canvas (the evaluation's paste)."""
    out = torch.zeros(probs.shape[0], 1, *canvas, dtype=probs.dtype, device=probs.device)
    for b, (rmin, rmax, cmin, cmax) in enumerate(rois):
        h, w = rmax - rmin + 1, cmax - cmin + 1
        out[b, :, rmin : rmax + 1, cmin : cmax + 1] = F.interpolate(probs[b : b + 1], size=(h, w), mode="bilinear", align_corners=True)
    return out


def map_clicks_to_views(clicks: torch.Tensor, rois: list[Roi], size: int) -> torch.Tensor:
    """``B x N x 3`` canvas clicks -> view clicks: ``y' = T (y - rmin) / (rmax - rmin + 1)``
    (likewise ``x``); padding rows and rows with both coordinates negative become padding."""
    out = clicks.clone()
    for b, (rmin, rmax, cmin, cmax) in enumerate(rois):
        out[b, :, 0] = size * (clicks[b, :, 0] - rmin) / (rmax - rmin + 1)
        out[b, :, 1] = size * (clicks[b, :, 1] - cmin) / (cmax - cmin + 1)
    pad = (clicks[..., 2] < 0) | ((out[..., 0] < 0) & (out[..., 1] < 0))
    out[pad] = -1.0
    return out


def _positive_clicks(row: torch.Tensor) -> list[Click]:
    return [Click(True, (int(y), int(x))) for y, x, lab in row.tolist() if lab == 1]


def update_rois(
    rois: list[Roi], probs: torch.Tensor, clicks: torch.Tensor, zoom: list[bool], *, expansion_ratio: float = 1.4,
    min_crop_size: float = 180, recompute_thresh_iou: float = 0.5, prob_thresh: float = 0.5,
) -> list[Roi]:  # fmt: skip
    """The evaluation's ROI rule (:func:`icmformer.evaluation.roi.update_roi`) for each sample with
    ``zoom[b]``: candidate from the canvas probabilities and positive clicks; the ROI is replaced if
    a positive click lies outside it or the bbox IoU with the candidate is below
    ``recompute_thresh_iou``. Samples without zoom keep their ROI."""
    size = tuple(probs.shape[-2:])
    masks = (probs[:, 0] > prob_thresh).cpu().numpy()
    return [
        update_roi(masks[b], _positive_clicks(clicks[b]), rois[b], size, expansion_ratio, min_crop_size, recompute_thresh_iou)
        if zoom[b] else rois[b]
        for b in range(len(rois))
    ]  # fmt: skip


def _predict(model: nn.Module, image: torch.Tensor, clicks: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
    return model.predict_clicks(model.encode_image(image), compact_clicks(clicks), prev, allow_outside_clicks=True)


def zoom_iterative_forward(
    model: nn.Module,
    image: torch.Tensor,
    gt: torch.Tensor,
    clicks: torch.Tensor,
    rng: np.random.Generator,
    *,
    input_size: int,
    zoom_prob: float = 0.5,
    min_crop_size: float = 180,
    max_num_next_clicks: int = 3,
    thresh: float = 0.49,
    mode: str = "official",
    center_prob: float = 0.5,
    autocast: Callable[[], Any] | None = None,
):
    """Iterative forward pass over canvas views (see the module docstring).

    Args:
        model: an :class:`~icmformer.models.icmformer.ICMFormer` (not a DDP wrapper).
        image, gt: ``B x 3 x C x C`` / ``B x 1 x C x C`` canvas; clicks ``B x 2P x 3`` in canvas px.
        input_size: the network input side ``T``.
        zoom_prob: fraction of the samples that get the evaluation's zoom-in views.
        min_crop_size: the zoom-in's minimum ROI side, in canvas pixels.

    Returns ``(logits, gt_view, num_iters)``: logits of the last view (with gradients) and the
    ground truth of that view (nearest-resized), for the loss.
    """
    ctx = autocast or contextlib.nullcontext
    b, _, h, w = image.shape
    num_iters = sample_num_iters(rng, max_num_next_clicks)
    zoom = [bool(z) for z in rng.random(b) < zoom_prob]
    rois: list[Roi] = [(0, h - 1, 0, w - 1)] * b
    prev = torch.zeros(b, 1, h, w, dtype=torch.float32, device=image.device)
    if num_iters > 0:
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for k in range(num_iters):
                    view = crop_views(image, rois, input_size)
                    with ctx():
                        logits = _predict(model, view, map_clicks_to_views(clicks, rois, input_size), crop_views(prev, rois, input_size))
                    prev = paste_views(torch.sigmoid(logits.float()), rois, (h, w))
                    clicks = add_next_clicks(prev, gt, clicks, rng, thresh=thresh, mode=mode, center_prob=center_prob, step=k + 1)
                    rois = update_rois(rois, prev, clicks, zoom, min_crop_size=min_crop_size)
        finally:
            model.train(was_training)
    view = crop_views(image, rois, input_size)
    with ctx():
        logits = _predict(model, view, map_clicks_to_views(clicks, rois, input_size), crop_views(prev, rois, input_size))
    return logits, crop_views(gt, rois, input_size, mode="nearest"), num_iters
