"""The plain (ViT) backbone of iCMFormer, built from timm's ``PatchEmbed`` and ``Block``.

Forward pass (official ``forward_backbone_cross_encdec``; X = image tokens, Y = click tokens):

1. ``X = patch_embed(image) + pos``, ``Y = click_embed(click maps) + pos`` (the same position
   embedding, without a cls row, added to both streams).
2. The shared first group ``blocks[:shared_depth]`` runs on X and, with the same weights, on Y
   (variants ``X,Y,*`` and the no-cross base model; variants ``X,*`` skip it for Y).
3. The cross-modality blocks update Y (or X, for ``*YX``), see ``cross.py``.
4. ``X + Y`` runs through ``blocks[shared_depth:]``; no final norm.

Attention windows: tokens are split into non-overlapping ``window_size x window_size`` windows
(the official 14 x 14 tokens = 224 px); 1-based block ``i`` attends globally iff
``i % global_attn_every == 0`` (blocks 6 and 12 for ViT-B), all other blocks attend within windows.
Cross block ``j`` follows the same rule with its own counter (all three ViT-B cross blocks are
windowed; image and click tokens share the windows).

Steps 1-2 on X do not depend on the clicks: :meth:`ViTBackbone.encode_image` computes them once.
"""
from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from timm.layers import PatchEmbed
from timm.models.vision_transformer import Block

from icmformer.models.config import ICMFormerConfig
from icmformer.models.config import linspace as _linspace
from icmformer.models.cross import CrossModalityBlock, variant_shares_first_group


def tokens_to_windows(x: torch.Tensor, grid: tuple[int, int], win: int) -> torch.Tensor:
    """``B x (gh*gw) x C`` (row-major) -> ``(B*nW) x (win*win) x C``."""
    b, _, c = x.shape
    gh, gw = grid
    x = x.view(b, gh // win, win, gw // win, win, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b * (gh // win) * (gw // win), win * win, c)


def windows_to_tokens(x: torch.Tensor, grid: tuple[int, int], win: int) -> torch.Tensor:
    """Inverse of :func:`tokens_to_windows`."""
    gh, gw = grid
    nwh, nww = gh // win, gw // win
    b = x.shape[0] // (nwh * nww)
    c = x.shape[-1]
    x = x.view(b, nwh, nww, win, win, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, gh * gw, c)


def window_attention_to_dense(attn: torch.Tensor, batch: int, grid: tuple[int, int], win: int) -> torch.Tensor:
    """Windowed attention ``(B*nW) x h x w^2 x w^2`` -> dense ``B x h x N x N`` (zero across windows)."""
    gh, gw = grid
    nwh, nww = gh // win, gw // win
    heads = attn.shape[1]
    a = attn.reshape(batch, nwh, nww, heads, win, win, win, win)
    dense = attn.new_zeros(batch, heads, gh, gw, gh, gw)
    for i in range(nwh):
        for j in range(nww):
            rs, cs = slice(i * win, (i + 1) * win), slice(j * win, (j + 1) * win)
            dense[:, :, rs, cs, rs, cs] = a[:, i, j]
    return dense.reshape(batch, heads, gh * gw, gh * gw)


def resize_pos_embed(pos: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int]) -> torch.Tensor:
    """Bicubic resize (``align_corners=False``, no antialias) of a ``1 x N x C`` grid embedding."""
    if tuple(old_grid) == tuple(new_grid):
        return pos
    c = pos.shape[-1]
    grid = pos.reshape(1, old_grid[0], old_grid[1], c).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), size=tuple(new_grid), mode="bicubic", align_corners=False).to(pos.dtype)
    return grid.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], c)


class ConvStem(nn.Module):
    """A convolutional stem in place of the patch embedding (demo models only; Xiao et al., "Early
    convolutions help transformers see better", NeurIPS 2021): two 3x3 stride-2 convolutions
    (GroupNorm, GELU) to 1/4 resolution, then a ``patch/4`` strided convolution to the tokens.

    ``forward`` returns the tokens ``B x N x C`` and the 1/4-resolution features ``B x c x H/4 x
    W/4``, which the model adds to the neck's 1/4 map. ``proj`` is the token projection (the name
    the patch embedding's projection has, for initialisation).
    """

    def __init__(self, channels: int, embed_dim: int, patch_size: int) -> None:
        super().__init__()
        half = channels // 2
        self.conv1 = nn.Sequential(nn.Conv2d(3, half, 3, stride=2, padding=1, bias=False), nn.GroupNorm(1, half), nn.GELU())
        self.conv2 = nn.Sequential(nn.Conv2d(half, channels, 3, stride=2, padding=1, bias=False), nn.GroupNorm(1, channels), nn.GELU())
        self.proj = nn.Conv2d(channels, embed_dim, patch_size // 4, stride=patch_size // 4)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skip = self.conv2(self.conv1(image))
        return self.proj(skip).flatten(2).transpose(1, 2), skip


class ViTBackbone(nn.Module):
    def __init__(self, cfg: ICMFormerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        dim = cfg.embed_dim
        self.patch_size = cfg.patch_size
        self.grid = (cfg.img_size // cfg.patch_size,) * 2
        embed = partial(PatchEmbed, img_size=cfg.img_size, patch_size=cfg.patch_size, embed_dim=dim, strict_img_size=False)
        self.patch_embed = ConvStem(cfg.stem_channels, dim, cfg.patch_size) if cfg.stem == "conv" else embed(in_chans=3)
        # Separate embedding of the click maps (prev mask, positive, negative); official name
        # ``patch_embed_coords``, outside the official backbone.
        self.click_embed = embed(in_chans=3)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid[0] * self.grid[1], dim))
        norm = partial(nn.LayerNorm, eps=1e-6)
        dpr = _linspace(cfg.drop_path_rate, cfg.depth)
        self.blocks = nn.ModuleList(
            Block(dim, cfg.num_heads, cfg.mlp_ratio, qkv_bias=cfg.qkv_bias, norm_layer=norm, act_layer=nn.GELU, drop_path=dpr[i])
            for i in range(cfg.depth)
        )
        n_cross = cfg.resolved_num_cross_blocks
        self.cross_blocks = nn.ModuleList(
            CrossModalityBlock(dim, cfg.resolved_cross_heads, cfg.cross_variant, cfg.mlp_ratio, cfg.qkv_bias, 1e-6, cfg.cross_act)
            for _ in range(n_cross)
        )
        self.shared_depth = cfg.resolved_shared_depth
        self.window = cfg.window_size
        every = cfg.resolved_global_every
        self.block_windowed = [self.window is not None and (i + 1) % every != 0 for i in range(cfg.depth)]
        self.cross_windowed = [self.window is not None and (j + 1) % every != 0 for j in range(n_cross)]
        self.clicks_through_first_group = (not cfg.cross_modality) or variant_shares_first_group(cfg.cross_variant)

    # ------------------------------------------------------------------------------ helpers
    def token_grid(self, size: tuple[int, int]) -> tuple[int, int]:
        h, w = size
        p = self.patch_size
        if h % p or w % p:
            raise ValueError(f"input size {h}x{w} (HxW) is not a multiple of the patch size {p}")
        grid = (h // p, w // p)
        uses_windows = any(self.block_windowed) or any(self.cross_windowed)
        if uses_windows and (grid[0] % self.window or grid[1] % self.window):
            side = self.window * p
            raise ValueError(
                f"input size {h}x{w} (HxW) does not fit the attention windows: with window_size={self.window} "
                f"tokens and patch {p}, height and width must be multiples of {side} px (e.g. {side}, {2 * side}, {3 * side})"
            )
        return grid

    def pos_embed_for(self, grid: tuple[int, int]) -> torch.Tensor:
        return resize_pos_embed(self.pos_embed, self.grid, grid)

    def _run_blocks(self, start: int, stop: int, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        windowed = False
        for i in range(start, stop):
            want = self.block_windowed[i]
            if want and not windowed:
                x = tokens_to_windows(x, grid, self.window)
            elif windowed and not want:
                x = windows_to_tokens(x, grid, self.window)
            windowed = want
            x = self.blocks[i](x)
        return windows_to_tokens(x, grid, self.window) if windowed else x

    # ------------------------------------------------------------------------------ forward
    def encode_image(self, image: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int], torch.Tensor | None]:
        """Normalised image ``B x 3 x H x W`` -> image tokens after the shared group, the grid, and
        the conv stem's 1/4-resolution features (``None`` with the patch embedding)."""
        grid = self.token_grid(tuple(image.shape[-2:]))
        skip = None
        if isinstance(self.patch_embed, ConvStem):
            x, skip = self.patch_embed(image)
        else:
            x = self.patch_embed(image)
        x = x + self.pos_embed_for(grid)
        return self._run_blocks(0, self.shared_depth, x, grid), grid, skip

    def forward_clicks(
        self, x: torch.Tensor, grid: tuple[int, int], click_maps: torch.Tensor, return_attention: bool = False
    ) -> tuple[torch.Tensor, dict]:
        """Image tokens (from :meth:`encode_image`) + click maps -> ``B x C x gh x gw`` features."""
        y = self.click_embed(click_maps) + self.pos_embed_for(grid)
        if self.clicks_through_first_group:
            y = self._run_blocks(0, self.shared_depth, y, grid)
        attentions = []
        if len(self.cross_blocks):
            b = x.shape[0]
            windowed = False
            for blk, want in zip(self.cross_blocks, self.cross_windowed):
                if want and not windowed:
                    x, y = tokens_to_windows(x, grid, self.window), tokens_to_windows(y, grid, self.window)
                elif windowed and not want:
                    x, y = windows_to_tokens(x, grid, self.window), windows_to_tokens(y, grid, self.window)
                windowed = want
                x, y, attn = blk(x, y, return_attention)
                if return_attention:
                    attentions.append(window_attention_to_dense(attn, b, grid, self.window) if windowed else attn)
            if windowed:
                x, y = windows_to_tokens(x, grid, self.window), windows_to_tokens(y, grid, self.window)
        extras = {"cross_attention": attentions, "click_tokens": y} if return_attention else {}
        x = self._run_blocks(self.shared_depth, len(self.blocks), x + y, grid)
        b, n, c = x.shape
        return x.transpose(1, 2).reshape(b, c, grid[0], grid[1]), extras
