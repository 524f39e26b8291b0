"""SegFormer-style all-MLP head (the official ``SwinTransfomerSegHead`` with ``upsample='x1'``).

For each input scale: 1x1 conv (with bias) + ReLU, bilinearly resized (``align_corners=False``) to
the 1/4 scale; concatenate [1/4, 1/8, 1/16, 1/32]; 1x1 conv + ReLU; ``Dropout2d(0.1)``; 1x1 conv to
one logit channel. The output is at 1/4 of the input resolution; the model upsamples it.
Module names (``convs.{i}.conv``, ``fusion_conv.conv``, ``conv_seg``) match the official keys.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class ConvReLU(nn.Module):
    """1x1 convolution with bias followed by ReLU (mmcv's ``ConvModule`` without a norm)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


class SegFormerHead(nn.Module):
    def __init__(self, in_channels: Sequence[int], channels: int = 256, dropout: float = 0.1, num_classes: int = 1) -> None:
        super().__init__()
        self.convs = nn.ModuleList([ConvReLU(c, channels) for c in in_channels])
        self.fusion_conv = ConvReLU(channels * len(in_channels), channels)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

        # The fusion conv is linear and bilinear resizing commutes with it, so each coarse scale
        # can be projected by its slice of the fusion weight *before* upsampling: the same result
        # (up to float rounding) without the 4C-channel map at 1/4 resolution. ``False`` runs the
        # official order (used by the naive benchmark path and by thop counting).
        self.low_res_fusion = True

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        size = features[0].shape[-2:]
        if self.low_res_fusion and not self.training:
            return self.conv_seg(self.dropout(self._fuse_low_res(features, size)))
        outs = []
        for conv, feat in zip(self.convs, features):
            y = conv(feat)
            if y.shape[-2:] != size:
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            outs.append(y)
        return self.conv_seg(self.dropout(self.fusion_conv(torch.cat(outs, dim=1))))

    def _fuse_low_res(self, features: Sequence[torch.Tensor], size) -> torch.Tensor:
        weight = self.fusion_conv.conv.weight  # C x (n C) x 1 x 1
        channels = weight.shape[0]
        fused = None
        for i, (conv, feat) in enumerate(zip(self.convs, features)):
            y = F.conv2d(conv(feat), weight[:, i * channels:(i + 1) * channels])
            if y.shape[-2:] != size:
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            fused = y if fused is None else fused + y
        return F.relu(fused + self.fusion_conv.conv.bias.view(1, -1, 1, 1), inplace=True)
