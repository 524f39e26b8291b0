"""The hierarchical (Swin) backbone of iCMFormer, built from timm's Swin block, PatchMerging and
PatchEmbed.

Forward pass (official ``SwinTransformer_cross_encdecv4.forward_backbone``):

1. The image and the click maps are embedded with the **same** patch embedding (conv 4x4/4 + LN):
   ``X0``, ``C0``; the early-fusion stream is ``X1 = X0 + C0``.
2. Stages ``0 .. shared_stages-1`` (and the patch merging that follows them) run on X and C with
   shared weights; they also run on X1, whose (normed) outputs are the first decoder features.
3. The cross-modality blocks (global attention, ``cross_num_heads`` heads, LN eps 1e-5) update C
   (or X, for ``*YX``) at the resolution after that merging (1/16, ``4 * embed_dim`` channels for
   ``shared_stages=2``).
4. ``X + C`` runs through the remaining stages; their normed outputs are the last decoder features.

Variants ``X,XY`` / ``X,YX`` (image-only first group) embed the clicks straight to the
cross-block resolution with a strided convolution (``click_embed``); see the README's
"Decisions" section. Steps 1-2 on X do not depend on the clicks (:meth:`SwinBackbone.encode_image`).

Stages use timm's layout (patch merging at the *start* of stages 1-3, keys
``layers.{i}.downsample``); the official code merges at the end of stages 0-2, which
``checkpoint.py`` maps. Windows are always partitioned and shifted (also when a feature map is no
larger than a window), and padding happens *before* the cyclic shift, as in the official
(segmentation-style) Swin; timm's block pads after the shift, which differs when a feature map is
not a multiple of the window (e.g. Swin-S@224 with window 12), hence :class:`SwinBlock`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from timm.layers import PatchEmbed
from timm.models.swin_transformer import PatchMerging, SwinTransformerBlock, window_partition, window_reverse

from icmformer.models.config import ICMFormerConfig
from icmformer.models.config import linspace as _linspace
from icmformer.models.cross import CrossModalityBlock, variant_shares_first_group


class SwinBlock(SwinTransformerBlock):
    """timm's Swin block, padding the feature map to whole windows before the cyclic shift."""

    def _attn(self, x: torch.Tensor) -> torch.Tensor:
        _, h, w, c = x.shape
        wh, ww = self.window_size
        pad_h, pad_w = (wh - h % wh) % wh, (ww - w % ww) % ww
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        hp, wp = x.shape[1:3]
        shifted = any(self.shift_size)
        mask = None
        if shifted:
            x = torch.roll(x, shifts=(-self.shift_size[0], -self.shift_size[1]), dims=(1, 2))
            mask = self.get_attn_mask(x)
        windows = window_partition(x, self.window_size).view(-1, self.window_area, c)
        windows = self.attn(windows, mask=mask).view(-1, wh, ww, c)
        x = window_reverse(windows, self.window_size, hp, wp)
        if shifted:
            x = torch.roll(x, shifts=self.shift_size, dims=(1, 2))
        return x[:, :h, :w, :].contiguous()


class SwinStage(nn.Module):
    """Optional patch merging (``downsample``) followed by Swin blocks; NHWC in and out."""

    def __init__(self, in_dim: int, dim: int, depth: int, num_heads: int, window: int, resolution: int,
                 downsample: bool, mlp_ratio: float, qkv_bias: bool, drop_path: list[float]) -> None:  # fmt: skip
        super().__init__()
        self.downsample = PatchMerging(in_dim, dim) if downsample else nn.Identity()
        self.blocks = nn.Sequential(*[
            SwinBlock(dim, (resolution, resolution), num_heads=num_heads, window_size=window,
                      shift_size=0 if i % 2 == 0 else window // 2, always_partition=True, dynamic_mask=True,
                      mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop_path=drop_path[i], norm_layer=nn.LayerNorm)
            for i in range(depth)
        ])  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class SwinBackbone(nn.Module):
    def __init__(self, cfg: ICMFormerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        e = cfg.embed_dim
        dims = [e * 2**i for i in range(4)]
        self.patch_embed = PatchEmbed(img_size=cfg.img_size, patch_size=cfg.patch_size, in_chans=3, embed_dim=e,
                                      norm_layer=nn.LayerNorm, output_fmt="NHWC", strict_img_size=False,
                                      dynamic_img_pad=True)  # fmt: skip
        dpr = _linspace(cfg.drop_path_rate, sum(cfg.depths))
        self.layers = nn.ModuleList()
        res = cfg.img_size // cfg.patch_size
        for i, depth in enumerate(cfg.depths):
            res = res if i == 0 else (res + 1) // 2
            start = sum(cfg.depths[:i])
            self.layers.append(SwinStage(dims[max(i - 1, 0)], dims[i], depth, cfg.stage_heads[i], cfg.window_size, res,
                                         i > 0, cfg.mlp_ratio, cfg.qkv_bias, dpr[start:start + depth]))  # fmt: skip
        for i, d in enumerate(dims):
            self.add_module(f"norm{i}", nn.LayerNorm(d))
        self.shared_stages = cfg.shared_stages
        cross_dim = cfg.cross_dim
        self.cross_blocks = nn.ModuleList(
            CrossModalityBlock(cross_dim, cfg.resolved_cross_heads, cfg.cross_variant, cfg.mlp_ratio, cfg.qkv_bias, 1e-5, cfg.cross_act)
            for _ in range(cfg.resolved_num_cross_blocks)
        )
        self.clicks_through_first_group = (not cfg.cross_modality) or variant_shares_first_group(cfg.cross_variant)
        if not self.clicks_through_first_group:
            stride = cfg.patch_size * 2**cfg.shared_stages
            self.click_embed = nn.Conv2d(3, cross_dim, kernel_size=stride, stride=stride)

    def _norm(self, i: int, x: torch.Tensor) -> torch.Tensor:
        return getattr(self, f"norm{i}")(x).permute(0, 3, 1, 2)

    def _shared(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(self.shared_stages):
            x = self.layers[i](x)
        return self.layers[self.shared_stages].downsample(x)

    def encode_image(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised image -> (patch embedding ``B x H/4 x W/4 x C``, image features at the cross resolution)."""
        x0 = self.patch_embed(image)
        return x0, self._shared(x0)

    def forward_clicks(
        self, x0: torch.Tensor, x: torch.Tensor, click_maps: torch.Tensor, return_attention: bool = False
    ) -> tuple[list[torch.Tensor], dict]:
        c0 = self.patch_embed(click_maps)
        outs = []
        x1 = x0 + c0  # early-fusion stream: the decoder's high-resolution features
        for i in range(self.shared_stages):
            x1 = self.layers[i](x1)
            outs.append(self._norm(i, x1))
        if self.clicks_through_first_group:
            c = self._shared(c0)
        else:
            c = self.click_embed(click_maps).permute(0, 2, 3, 1)
        b, h, w, ch = x.shape
        attentions = []
        if len(self.cross_blocks):
            xt, ct = x.reshape(b, h * w, ch), c.reshape(b, h * w, ch)
            for blk in self.cross_blocks:
                xt, ct, attn = blk(xt, ct, return_attention)
                if return_attention:
                    attentions.append(attn)
            x, c = xt.view(b, h, w, ch), ct.view(b, h, w, ch)
        extras = {"cross_attention": attentions, "click_tokens": c.reshape(b, h * w, ch), "grid": (h, w)} if return_attention else {}
        x = self.layers[self.shared_stages].blocks(x + c)
        outs.append(self._norm(self.shared_stages, x))
        for i in range(self.shared_stages + 1, len(self.layers)):
            x = self.layers[i](x)
            outs.append(self._norm(i, x))
        return outs, extras
