"""SimpleFPN (ViTDet-style) neck: one 1/16 feature map -> four scales (1/4, 1/8, 1/16, 1/32).

Layer indices inside each branch follow the official ``SimpleFPN`` so that checkpoint keys map
one to one (``down_4.0`` is the first transposed conv, ``down_4.1`` its GroupNorm, ...).
GroupNorm has one group (i.e. a LayerNorm over C, H, W).
"""
from __future__ import annotations

import torch
from torch import nn


def _gn(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(1, channels)


class SimpleFPN(nn.Module):
    def __init__(self, in_dim: int = 768, out_dims: tuple[int, int, int, int] = (128, 256, 512, 1024)) -> None:
        super().__init__()
        self.out_dims = tuple(out_dims)
        c4 = max(out_dims[0] * 2, in_dim // 2)
        self.down_4 = nn.Sequential(
            nn.ConvTranspose2d(in_dim, c4, 2, stride=2), _gn(c4), nn.GELU(),
            nn.ConvTranspose2d(c4, c4 // 2, 2, stride=2), _gn(c4 // 2),
            nn.Conv2d(c4 // 2, out_dims[0], 1), _gn(out_dims[0]), nn.GELU(),
        )  # fmt: skip
        c8 = max(out_dims[1], in_dim // 2)
        self.down_8 = nn.Sequential(
            nn.ConvTranspose2d(in_dim, c8, 2, stride=2), _gn(c8),
            nn.Conv2d(c8, out_dims[1], 1), _gn(out_dims[1]), nn.GELU(),
        )  # fmt: skip
        self.down_16 = nn.Sequential(nn.Conv2d(in_dim, out_dims[2], 1), _gn(out_dims[2]), nn.GELU())
        c32 = max(out_dims[3], in_dim * 2)
        self.down_32 = nn.Sequential(
            nn.Conv2d(in_dim, c32, 2, stride=2), _gn(c32),
            nn.Conv2d(c32, out_dims[3], 1), _gn(out_dims[3]), nn.GELU(),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.down_4(x), self.down_8(x), self.down_16(x), self.down_32(x)]
