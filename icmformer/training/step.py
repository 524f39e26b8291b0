"""The pieces of one training step: the iterative forward pass, the batch IoU, the optimiser and
the learning-rate schedule."""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from icmformer.evaluation.protocol import PRED_THRESHOLD
from icmformer.training.iterative import add_next_clicks, sample_num_iters


def batch_iou(logits: torch.Tensor, gt: torch.Tensor, thresh: float = PRED_THRESHOLD) -> torch.Tensor:
    """Per-sample IoU of ``sigmoid(logits) > thresh`` vs ``gt == 1``, ignoring ``gt == -1``.

    A sample with neither object nor predicted pixels (union empty) has IoU 1.
    """
    pred = torch.sigmoid(logits.detach().float()) > thresh
    valid = gt != -1
    obj = gt > 0.5
    inter = (pred & obj & valid).flatten(1).sum(1).float()
    union = ((pred | obj) & valid).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp_min(1.0), torch.ones_like(union))


def compact_clicks(clicks: torch.Tensor) -> torch.Tensor:
    """Drop the rows that are padding (label ``-1``) in every sample of the batch.

    The model's disk maps are a union over rows and ignore padding rows, so the logits do not
    change; the ``B x 2P x 3`` training layout has mostly padding rows (``2P = 48``, a few clicks),
    and the disk encoding costs time proportional to the number of rows.
    """
    keep = (clicks[..., 2] != -1).any(dim=0)
    if not bool(keep.any()):
        return clicks[:, :1]
    return clicks[:, keep]


class IterativeOutput(NamedTuple):
    """What :func:`iterative_forward` returns."""

    logits: torch.Tensor  # the final pass (with gradients)
    clicks: torch.Tensor  # the clicks of the final pass (given clicks + added ones)
    prev_mask: torch.Tensor  # the previous mask given to the final pass
    num_iters: int  # number of click-adding no-grad passes


def iterative_forward(
    model: nn.Module,
    image: torch.Tensor,
    gt: torch.Tensor,
    clicks: torch.Tensor,
    rng: np.random.Generator,
    *,
    max_num_next_clicks: int = 3,
    thresh: float = PRED_THRESHOLD,
    mode: str = "official",
    center_prob: float = 0.5,
    eval_model: nn.Module | None = None,
    autocast: Callable[[], Any] | None = None,
) -> IterativeOutput:
    """The official iterative training forward pass (``ISTrainer.batch_forward``).

    Args:
        model: the network for the final pass (e.g. the ``DistributedDataParallel`` wrapper).
        image: ``B x 3 x H x W`` in [0, 1]; gt: ``B x 1 x H x W`` with ``1``/``0``/``-1``.
        clicks: ``B x 2P x 3`` initial clicks (points sampler layout).
        rng: draws ``num_iters`` and the positions of the added clicks.
        max_num_next_clicks: ``num_iters`` is uniform in ``0..max_num_next_clicks``.
        thresh, mode, center_prob: see :func:`~icmformer.training.iterative.add_next_clicks`.
        eval_model: the module run in the no-grad passes (default ``model``; pass the unwrapped
            module under DDP).
        autocast: a context-manager factory wrapped around every forward pass (``bf16``).

    The no-grad passes run in ``eval()`` mode; the training mode the model had is restored
    before the final pass. The model receives the clicks without the rows that are padding in
    the whole batch (:func:`compact_clicks`; same logits, cheaper disk encoding); the returned
    ``clicks`` keep the ``B x 2P x 3`` layout.
    """
    eval_model = model if eval_model is None else eval_model
    ctx = autocast or contextlib.nullcontext
    num_iters = sample_num_iters(rng, max_num_next_clicks)
    prev = torch.zeros(gt.shape, dtype=torch.float32, device=image.device)
    if num_iters > 0:
        was_training = eval_model.training
        eval_model.eval()
        try:
            with torch.no_grad():
                for k in range(num_iters):
                    with ctx():
                        logits = eval_model(image, compact_clicks(clicks), prev)
                    prev = torch.sigmoid(logits.float())
                    clicks = add_next_clicks(prev, gt, clicks, rng, thresh=thresh, mode=mode, center_prob=center_prob, step=k + 1)
        finally:
            eval_model.train(was_training)
    with ctx():
        logits = model(image, compact_clicks(clicks), prev)
    return IterativeOutput(logits, clicks, prev, num_iters)


def cosine_factor(step: int, total: int, warmup: int = 0, min_ratio: float = 0.01) -> float:
    """LR factor at optimiser step ``step`` (0-based): linear warm-up to 1 over ``warmup`` steps,
    then a cosine from 1 to ``min_ratio`` at ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    t = min(max(step - warmup, 0) / max(total - warmup, 1), 1.0)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))


def build_optimizer(params, optim_cfg) -> torch.optim.Optimizer:
    """Adam (official: lr 5e-5, betas (0.9, 0.999), eps 1e-8, no weight decay) or AdamW."""
    kwargs = dict(lr=float(optim_cfg.lr), betas=tuple(float(b) for b in optim_cfg.betas), eps=float(optim_cfg.eps),
                  weight_decay=float(optim_cfg.weight_decay))  # fmt: skip
    if optim_cfg.name == "adam":
        return torch.optim.Adam(params, **kwargs)
    if optim_cfg.name == "adamw":
        return torch.optim.AdamW(params, **kwargs)
    raise ValueError(f"config key optim.name: unknown optimiser {optim_cfg.name!r} (adam or adamw)")



def build_scheduler(optimizer: torch.optim.Optimizer, schedule_cfg, steps_per_epoch: int):
    """The LR scheduler of ``schedule``: ``cosine`` (a ``LambdaLR`` stepped per optimiser step) or
    ``multistep`` (``MultiStepLR`` stepped once per epoch). Returns ``(scheduler, step_per_step)``."""
    if schedule_cfg.kind == "cosine":
        factor = partial(cosine_factor, total=steps_per_epoch * schedule_cfg.epochs, warmup=int(schedule_cfg.warmup_steps),
                         min_ratio=float(schedule_cfg.min_lr_ratio))  # fmt: skip
        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor), True
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=list(schedule_cfg.milestones), gamma=float(schedule_cfg.gamma)
    )
    return scheduler, False
