"""The cross-modality block and its ablation variants.

Notation (paper, Table 5): ``X`` = image tokens, ``Y`` = click tokens. The variant name lists what
passes through the shared first group ("X,Y": both, "X": image only) and the direction of the
cross-attention: ``XY`` = guidance from X to Y (queries from Y, keys/values from X, Y updated),
``YX`` = guidance from Y to X (queries from X, keys/values from Y, X updated).

=========  =====================  ==========================================================
variant    first group            one cross block
=========  =====================  ==========================================================
X,Y,XY     X and Y (default)      Y += SA(Y); Y += CA(q=Y, kv=X); Y += MLP(Y)
X,Y,YX     X and Y                Y += SA(Y); X += CA(q=X, kv=Y); X += MLP(X)
X,XY       X only                 Y += CA(q=Y, kv=X); Y += MLP(Y)
X,YX       X only                 X += CA(q=X, kv=Y); X += MLP(X)
=========  =====================  ==========================================================

All sub-layers are pre-norm; the norm in front of the cross-attention is shared by both of its
inputs (as the official ``BlockCA``). The official block computes the full q/k/v projection of
both inputs with one ``Linear(dim, 3 dim)`` and discards half of it; we compute only what is used
(``q`` from the query tokens, ``kv`` from the key/value tokens). The official weight splits
exactly into ours (rows ``[:dim]`` -> ``q``, rows ``[dim:]`` -> ``kv``), see ``checkpoint.py``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from timm.layers import Mlp

VARIANTS = ("X,Y,XY", "X,Y,YX", "X,XY", "X,YX")

_ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU}


def variant_shares_first_group(variant: str) -> bool:
    """True if the click tokens pass through the shared first group (variants ``X,Y,*``)."""
    return variant.startswith("X,Y,")


def variant_updates_clicks(variant: str) -> bool:
    """True if the cross-attention updates the click tokens (``*XY``), False if it updates the image tokens."""
    return variant.endswith("XY")


class CrossAttention(nn.Module):
    """Multi-head attention with queries from one token set and keys/values from another.

    Used for the click self-attention too (same tensor as both inputs). ``fused_attn`` selects
    PyTorch's fused scaled-dot-product attention; the explicit softmax path runs when it is off
    or when the attention weights are requested.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"cross-attention dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.fused_attn = True
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(
        self, q_in: torch.Tensor, kv_in: torch.Tensor, return_attention: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        b, nq, c = q_in.shape
        nk = kv_in.shape[1]
        q = self.q(q_in).reshape(b, nq, self.num_heads, self.head_dim).transpose(1, 2)
        kv = self.kv(kv_in).reshape(b, nk, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        k, v = kv.unbind(0)
        attn = None
        if self.fused_attn and not return_attention:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
            out = attn @ v
        out = out.transpose(1, 2).reshape(b, nq, c)
        return self.proj(out), attn


class CrossModalityBlock(nn.Module):
    """One cross-modality block; ``forward(x, y) -> (x, y, attention)`` for any variant."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        variant: str = "X,Y,XY",
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        norm_eps: float = 1e-6,
        act: str = "gelu",
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown cross_variant {variant!r}; choose from {', '.join(VARIANTS)}")
        if act not in _ACTIVATIONS:
            raise ValueError(f"unknown cross_act {act!r}; choose from {', '.join(_ACTIVATIONS)}")
        self.variant = variant
        self.updates_clicks = variant_updates_clicks(variant)
        self.has_self_attention = variant_shares_first_group(variant)
        if self.has_self_attention:
            self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
            self.attn1 = CrossAttention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn2 = CrossAttention(dim, num_heads, qkv_bias)
        self.norm3 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=_ACTIVATIONS[act])
        self.drop_path = nn.Identity()
        if drop_path > 0:
            from timm.layers import DropPath

            self.drop_path = DropPath(drop_path)

    def forward(
        self, x: torch.Tensor, y: torch.Tensor, return_attention: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Args: ``x`` image tokens, ``y`` click tokens (``B x N x C`` each, same windows).

        Returns the updated ``(x, y)`` and, if requested, the cross-attention weights
        ``B x heads x N_query x N_key`` (queries from the updated stream).
        """
        if self.has_self_attention:
            h = self.norm1(y)
            y = y + self.drop_path(self.attn1(h, h)[0])
        if self.updates_clicks:
            out, attn = self.attn2(self.norm2(y), self.norm2(x), return_attention)
            y = y + self.drop_path(out)
            y = y + self.drop_path(self.mlp(self.norm3(y)))
        else:
            out, attn = self.attn2(self.norm2(x), self.norm2(y), return_attention)
            x = x + self.drop_path(out)
            x = x + self.drop_path(self.mlp(self.norm3(x)))
        return x, y, attn
