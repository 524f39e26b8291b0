"""Normalized focal loss (NFL), as the official iCMFormer / RITM training uses it.

The official code (``isegm/model/losses.py: NormalizedFocalLossSigmoid`` with ``alpha=0.5,
gamma=2``; see ``OFFICIAL.md`` section 1a "Loss") computes, per pixel, with ``p = sigmoid(logit)``
and ``valid = label != -1``::

    pt      = 1 - |label - p|           where valid, 1 elsewhere
    alpha_t = alpha                      (0.5 for foreground and background alike)
    beta    = (1 - pt) ** gamma
    mult    = sum_hw(valid) / (sum_hw(beta) + 1e-12)          # per sample, detached
    loss_px = -alpha_t * beta * mult * log(min(pt + 1e-12, 1))

and per sample ``sum_hw(loss_px * valid) / (sum_hw(valid) + 1e-12)``; the trainer averages the
per-sample losses over the batch. The normalisation ``mult`` rescales the focal weights so that
they sum to the number of valid pixels, and it carries no gradient.

A sample whose pixels are all ignored contributes exactly 0 (no NaN): ``beta`` is 0 everywhere,
``log(1) = 0`` and the per-sample sum is 0 / 1e-12.
"""
from __future__ import annotations

import torch
from torch import nn

IGNORE = -1


def normalized_focal_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    alpha: float = 0.5,
    gamma: float = 2.0,
    eps: float = 1e-12,
    reduction: str = "mean",
) -> torch.Tensor:
    """Normalized focal loss on sigmoid logits.

    Args:
        logits: ``B x 1 x H x W`` (or ``B x H x W``) logits before the sigmoid.
        labels: same shape, values ``1`` (object), ``0`` (background), ``-1`` (ignore).
        alpha: class weight; the official ``alpha=0.5`` gives both classes ``alpha_t = 0.5``
            (``alpha`` for the object, ``1 - alpha`` for the background in general).
        gamma: focusing exponent (official 2).
        eps: the official ``1e-12`` guards.
        reduction: ``"mean"`` (over the batch: the official trainer), ``"sum"`` or ``"none"``
            (a ``B`` vector of per-sample losses).

    Returns:
        A scalar (``mean``/``sum``) or the per-sample losses (``none``).
    """
    if logits.shape != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} must have the same shape")
    if logits.ndim < 3:
        raise ValueError(f"logits must be B x 1 x H x W or B x H x W, got shape {tuple(logits.shape)}")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    logits = logits.float()
    labels = labels.to(dtype=logits.dtype)
    dims = tuple(range(1, logits.ndim))

    prob = torch.sigmoid(logits)
    valid = labels != IGNORE
    validf = valid.to(logits.dtype)
    one_hot = labels > 0.5

    alpha_t = torch.where(one_hot, torch.full_like(prob, alpha), torch.full_like(prob, 1.0 - alpha))
    pt = torch.where(valid, 1.0 - torch.abs(labels - prob), torch.ones_like(prob))
    beta = (1.0 - pt) ** gamma

    with torch.no_grad():  # official: summed over H, W (per sample and channel), detached
        mult = validf.sum(dim=(-2, -1), keepdim=True) / (beta.sum(dim=(-2, -1), keepdim=True) + eps)

    loss_px = -alpha_t * beta * mult * torch.log(torch.clamp(pt + eps, max=1.0))
    per_sample = (loss_px * validf).sum(dim=dims) / (validf.sum(dim=dims) + eps)
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    return per_sample


class NormalizedFocalLoss(nn.Module):
    """Module wrapper of :func:`normalized_focal_loss` (defaults: the official alpha 0.5, gamma 2)."""

    def __init__(self, alpha: float = 0.5, gamma: float = 2.0, reduction: str = "mean") -> None:
        super().__init__()
        self.alpha = alpha
        self.gamma = gamma
        self.reduction = reduction

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return normalized_focal_loss(logits, labels, self.alpha, self.gamma, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, gamma={self.gamma}, reduction={self.reduction!r}"
