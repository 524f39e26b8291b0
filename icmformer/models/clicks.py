"""Click encoding: clicks -> two binary disk maps (positive, negative).

Clicks reach the model as a ``B x N x 3`` float tensor of ``(y, x, label)`` rows: ``y`` is the
row and ``x`` the column in pixels of the image tensor given to the model, ``label`` is ``1`` for
a positive click, ``0`` for a negative one and ``-1`` for padding (rows that are ignored, so
batches can hold different numbers of clicks).

A pixel ``(i, j)`` belongs to a click's disk iff ``(i - y)^2 + (j - x)^2 <= radius^2`` on the
integer pixel grid, computed in float32 exactly as the official ``DistMaps(use_disks=True)``; the
disks of all positive (negative) clicks are merged into one channel. The encoding is vectorised
and runs on the device of the click tensor.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

POSITIVE, NEGATIVE, PADDING = 1, 0, -1


def validate_clicks(
    clicks: torch.Tensor, size: tuple[int, int], batch: int | None = None, allow_outside: bool = False
) -> torch.Tensor:
    """Check a click tensor and return it as float32.

    Args:
        clicks: ``B x N x 3`` tensor of ``(y, x, label)``.
        size: ``(H, W)`` of the image the clicks refer to.
        batch: expected batch size (``None``: any).
        allow_outside: accept clicks outside the image. The zoom-in predictor needs this: a
            negative click outside the current crop still paints the part of its disk that falls
            inside, as in the official implementation. User-facing calls keep it ``False``.

    Raises:
        ValueError: wrong shape or dtype, labels other than 1/0/-1, or a (non-padding) click
            outside the image when ``allow_outside`` is ``False``.
    """
    if not isinstance(clicks, torch.Tensor):
        raise ValueError(f"clicks must be a torch.Tensor of shape B x N x 3, got {type(clicks).__name__}")
    if clicks.ndim != 3 or clicks.shape[-1] != 3:
        raise ValueError(f"clicks must have shape B x N x 3 (y, x, label), got {tuple(clicks.shape)}")
    if batch is not None and clicks.shape[0] != batch:
        raise ValueError(f"clicks have batch size {clicks.shape[0]} but the image batch has {batch}")
    if clicks.is_complex() or clicks.dtype == torch.bool:
        raise ValueError(f"clicks must be a real-valued tensor, got dtype {clicks.dtype}")
    clicks = clicks.float()
    labels = clicks[..., 2]
    bad = ~((labels == POSITIVE) | (labels == NEGATIVE) | (labels == PADDING))
    if bool(bad.any()):
        raise ValueError(
            f"click labels must be 1 (positive), 0 (negative) or -1 (padding); got {labels[bad].unique().tolist()}"
        )
    if not allow_outside:
        h, w = size
        real = labels != PADDING
        y, x = clicks[..., 0], clicks[..., 1]
        outside = real & ((y < 0) | (y > h - 1) | (x < 0) | (x > w - 1))
        if bool(outside.any()):
            b, n = outside.nonzero()[0].tolist()
            raise ValueError(
                f"click (y={y[b, n].item():g}, x={x[b, n].item():g}) in batch item {b} lies outside "
                f"the {h}x{w} (HxW) image; clicks must satisfy 0 <= y <= {h - 1} and 0 <= x <= {w - 1}"
            )
    return clicks


def encode_clicks(clicks: torch.Tensor, size: tuple[int, int], radius: float = 5.0) -> torch.Tensor:
    """Encode clicks as disk maps.

    Args:
        clicks: validated ``B x N x 3`` float tensor (see :func:`validate_clicks`).
        size: ``(H, W)`` of the maps.
        radius: disk radius in pixels (the paper's 5).

    Returns:
        ``B x 2 x H x W`` float tensor: channel 0 positive disks, channel 1 negative disks.
    """
    h, w = size
    b, n, _ = clicks.shape
    out = torch.zeros(b, 2, h, w, dtype=torch.float32, device=clicks.device)
    if n == 0:
        return out
    y, x, labels = clicks[..., 0], clicks[..., 1], clicks[..., 2]
    rows = torch.arange(h, dtype=torch.float32, device=clicks.device)
    cols = torch.arange(w, dtype=torch.float32, device=clicks.device)
    dy2 = (rows.view(1, 1, h) - y.unsqueeze(-1)) ** 2  # B x N x H
    dx2 = (cols.view(1, 1, w) - x.unsqueeze(-1)) ** 2  # B x N x W
    inside = (dy2.unsqueeze(-1) + dx2.unsqueeze(-2)) <= float(radius) ** 2  # B x N x H x W
    for channel, label in enumerate((POSITIVE, NEGATIVE)):
        sel = (labels == label).view(b, n, 1, 1)
        out[:, channel] = (inside & sel).any(dim=1).float()
    return out


def clicks_to_tensor(
    click_lists: Sequence[Sequence[tuple[float, float, bool]]], device: torch.device | str | None = None
) -> torch.Tensor:
    """Build a padded ``B x N x 3`` click tensor from per-image lists of ``(y, x, is_positive)``."""
    n = max((len(c) for c in click_lists), default=0)
    t = torch.full((len(click_lists), max(n, 1), 3), float(PADDING), dtype=torch.float32)
    for i, clicks in enumerate(click_lists):
        for j, (y, x, positive) in enumerate(clicks):
            t[i, j] = torch.tensor([float(y), float(x), float(POSITIVE if positive else NEGATIVE)])
    return t.to(device) if device is not None else t
