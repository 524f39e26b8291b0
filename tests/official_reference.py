"""An independent reference of the official ViT iCMFormer forward pass, for tests.

Written directly from ``../shared/reference/OFFICIAL.md`` §1a with plain tensor operations on an
*official-layout* state dict (key names of §1d): the official window ``view``/``permute``, the
official ``MHAttention`` (full q/k/v projection of both inputs, queries from the click tokens),
``SimpleFPN`` and the SegFormer head. It shares no code with ``icmformer.models`` so that
agreement between the two checks both the architecture and the checkpoint key mapping.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def dist_maps(points: torch.Tensor, h: int, w: int, radius: float = 5.0) -> torch.Tensor:
    """Official DistMaps(use_disks=True): points (B, 2P, 3) rows (y, x, idx), first half positive."""
    b, n2, _ = points.shape
    p = n2 // 2
    rows = torch.arange(h, dtype=torch.float32).view(h, 1).expand(h, w)
    cols = torch.arange(w, dtype=torch.float32).view(1, w).expand(h, w)
    out = torch.zeros(b, 2, h, w)
    for bi in range(b):
        for half in range(2):
            d = torch.full((h, w), 1e6)
            for r in range(half * p, (half + 1) * p):
                y, x = points[bi, r, 0], points[bi, r, 1]
                if max(float(y), float(x)) < 0:
                    continue
                d = torch.minimum(d, (rows - y) ** 2 + (cols - x) ** 2)
            out[bi, half] = (d <= radius**2).float()
    return out


def _ln(x, sd, key, eps):
    return F.layer_norm(x, (x.shape[-1],), sd[f"{key}.weight"], sd[f"{key}.bias"], eps)


def _lin(x, sd, key):
    return F.linear(x, sd[f"{key}.weight"], sd.get(f"{key}.bias"))


def _mlp(x, sd, key):
    return _lin(F.gelu(_lin(x, sd, f"{key}.fc1")), sd, f"{key}.fc2")


def _attention(x, sd, key, heads):
    b, n, c = x.shape
    qkv = _lin(x, sd, f"{key}.qkv").reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    attn = ((q @ k.transpose(-2, -1)) * (c // heads) ** -0.5).softmax(-1)
    return _lin((attn @ v).transpose(1, 2).reshape(b, n, c), sd, f"{key}.proj")


def _mh_attention(x, y, sd, key, heads):
    # official MHAttention.forward(x, y): q from y, k and v from x, both projected in full
    b, n, c = x.shape
    qkv1 = _lin(x, sd, f"{key}.qkv").reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    qkv2 = _lin(y, sd, f"{key}.qkv").reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv2[0], qkv1[1], qkv1[2]
    attn = ((q @ k.transpose(-2, -1)) * (c // heads) ** -0.5).softmax(-1)
    return _lin((attn @ v).transpose(1, 2).reshape(b, n, c), sd, f"{key}.proj")


def _block(x, sd, i, heads):
    k = f"backbone.blocks.{i}"
    x = x + _attention(_ln(x, sd, f"{k}.norm1", 1e-6), sd, f"{k}.attn", heads)
    return x + _mlp(_ln(x, sd, f"{k}.norm2", 1e-6), sd, f"{k}.mlp")


def _block_ca(x, y, sd, j, heads):
    k = f"backbone.blocks2.{j}"
    n1 = _ln(x, sd, f"{k}.norm1", 1e-6)
    x = x + _mh_attention(n1, n1, sd, f"{k}.attn1", heads)
    x = x + _mh_attention(_ln(y, sd, f"{k}.norm2", 1e-6), _ln(x, sd, f"{k}.norm2", 1e-6), sd, f"{k}.attn2", heads)
    return x + _mlp(_ln(x, sd, f"{k}.norm3", 1e-6), sd, f"{k}.mlp")


def _patchify(x, grid, win_grid):
    b, n, c = x.shape
    gh, gw = grid
    wh, ww = gh // win_grid, gw // win_grid
    x = x.view(b, wh, gh // wh, ww, gw // ww, c).permute(0, 1, 3, 2, 4, 5).contiguous()
    return x.view(b * wh * ww, gh * gw // (wh * ww), c)


def _unpatchify(x, grid, win_grid):
    b, n, c = x.shape
    gh, gw = grid
    wh, ww = gh // win_grid, gw // win_grid
    x = x.view(b // (wh * ww), wh, ww, gh // wh, gw // ww, c)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(b // (wh * ww), wh * ww * n, c)


def _gn(x, sd, key):
    return F.group_norm(x, 1, sd[f"{key}.weight"], sd[f"{key}.bias"], 1e-5)


def _neck(x, sd):
    k = "neck"
    d4 = F.conv_transpose2d(x, sd[f"{k}.down_4.0.weight"], sd[f"{k}.down_4.0.bias"], stride=2)
    d4 = F.gelu(_gn(d4, sd, f"{k}.down_4.1"))
    d4 = _gn(F.conv_transpose2d(d4, sd[f"{k}.down_4.3.weight"], sd[f"{k}.down_4.3.bias"], stride=2), sd, f"{k}.down_4.4")
    d4 = F.gelu(_gn(F.conv2d(d4, sd[f"{k}.down_4.5.weight"], sd[f"{k}.down_4.5.bias"]), sd, f"{k}.down_4.6"))
    d8 = _gn(F.conv_transpose2d(x, sd[f"{k}.down_8.0.weight"], sd[f"{k}.down_8.0.bias"], stride=2), sd, f"{k}.down_8.1")
    d8 = F.gelu(_gn(F.conv2d(d8, sd[f"{k}.down_8.2.weight"], sd[f"{k}.down_8.2.bias"]), sd, f"{k}.down_8.3"))
    d16 = F.gelu(_gn(F.conv2d(x, sd[f"{k}.down_16.0.weight"], sd[f"{k}.down_16.0.bias"]), sd, f"{k}.down_16.1"))
    d32 = _gn(F.conv2d(x, sd[f"{k}.down_32.0.weight"], sd[f"{k}.down_32.0.bias"], stride=2), sd, f"{k}.down_32.1")
    d32 = F.gelu(_gn(F.conv2d(d32, sd[f"{k}.down_32.2.weight"], sd[f"{k}.down_32.2.bias"]), sd, f"{k}.down_32.3"))
    return [d4, d8, d16, d32]


def _head(feats, sd):
    outs = []
    for i, f in enumerate(feats):
        y = F.relu(F.conv2d(f, sd[f"head.convs.{i}.conv.weight"], sd[f"head.convs.{i}.conv.bias"]))
        outs.append(F.interpolate(y, size=feats[0].shape[2:], mode="bilinear", align_corners=False))
    y = F.relu(F.conv2d(torch.cat(outs, 1), sd["head.fusion_conv.conv.weight"], sd["head.fusion_conv.conv.bias"]))
    return F.conv2d(y, sd["head.conv_seg.weight"], sd["head.conv_seg.bias"])


@torch.no_grad()
def official_vit_forward(sd, image, prev_mask, points, heads, depth, patch=16):
    """Logits of the official ``PlainVitModel`` (eval mode) for an official-layout state dict."""
    b, _, h, w = image.shape
    coord = torch.cat([prev_mask, dist_maps(points, h, w)], dim=1)
    img = (image - MEAN) / STD
    grid = (h // patch, w // patch)
    win_grid = 224 // patch
    c = F.conv2d(coord, sd["patch_embed_coords.proj.weight"], sd["patch_embed_coords.proj.bias"], stride=patch)
    x = F.conv2d(img, sd["backbone.patch_embed.proj.weight"], sd["backbone.patch_embed.proj.bias"], stride=patch)
    x = x.flatten(2).transpose(1, 2) + sd["backbone.pos_embed"][:, 1:]
    c = c.flatten(2).transpose(1, 2) + sd["backbone.pos_embed"][:, 1:]
    per_group = 6 if depth == 12 else depth // 4
    patched = False
    for i in range(1, depth // 2 + 1):
        if i % per_group:
            if not patched:
                x, c, patched = _patchify(x, grid, win_grid), _patchify(c, grid, win_grid), True
        else:
            x, c, patched = _unpatchify(x, grid, win_grid), _unpatchify(c, grid, win_grid), False
        x, c = _block(x, sd, i - 1, heads), _block(c, sd, i - 1, heads)
    for j in range(1, depth // 6 + 2):
        if j % per_group:
            if not patched:
                x, c, patched = _patchify(x, grid, win_grid), _patchify(c, grid, win_grid), True
        else:
            x, c, patched = _unpatchify(x, grid, win_grid), _unpatchify(c, grid, win_grid), False
        c = _block_ca(c, x, sd, j - 1, heads)
    x = x + c
    for t in range(depth // 2 + 1, depth + 1):
        if t % per_group:
            if not patched:
                x, patched = _patchify(x, grid, win_grid), True
        else:
            x, patched = _unpatchify(x, grid, win_grid), False
        x = _block(x, sd, t - 1, heads)
    feat = x.transpose(1, 2).reshape(b, -1, grid[0], grid[1])
    logits = _head(_neck(feat, sd), sd)
    return F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=True)
