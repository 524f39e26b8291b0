"""Our Swin block pads before the cyclic shift, as the official (segmentation-style) Swin."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from timm.models.swin_transformer import SwinTransformerBlock

from icmformer.models.swin import SwinBlock


def reference_shifted_window_attention(block: SwinBlock, x: torch.Tensor) -> torch.Tensor:
    """Loop-by-window reference of the official block's attention branch (norm applied by caller).

    Pad to whole windows, roll by -shift, label the regions of the padded map with the official
    slices (0:-w, -w:-s, -s:), and attend within each window among tokens of the same region.
    """
    attn = block.attn
    (w, _), (s, _) = block.window_size, block.shift_size
    b, h, wd, c = x.shape
    ph, pw = (w - h % w) % w, (w - wd % w) % w
    xp = F.pad(x, (0, 0, 0, pw, 0, ph))
    hp, wp = xp.shape[1:3]
    region = torch.zeros(hp, wp, dtype=torch.long)
    cnt = 0
    for hs in (slice(0, -w), slice(-w, -s), slice(-s, None)):
        for ws in (slice(0, -w), slice(-w, -s), slice(-s, None)):
            region[hs, ws] = cnt
            cnt += 1
    xs = torch.roll(xp, shifts=(-s, -s), dims=(1, 2))
    out = torch.zeros_like(xs)
    heads = attn.num_heads
    bias = attn._get_rel_pos_bias()[0]  # heads x w^2 x w^2
    for i in range(0, hp, w):
        for j in range(0, wp, w):
            tokens = xs[:, i:i + w, j:j + w].reshape(b, w * w, c)
            reg = region[i:i + w, j:j + w].reshape(-1)
            qkv = attn.qkv(tokens).reshape(b, w * w, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
            logits = (q * attn.scale) @ k.transpose(-2, -1) + bias
            logits = logits + torch.where(reg[:, None] == reg[None, :], 0.0, -100.0)
            o = (logits.softmax(-1) @ v).transpose(1, 2).reshape(b, w * w, c)
            out[:, i:i + w, j:j + w] = attn.proj(o).reshape(b, w, w, c)
    out = torch.roll(out, shifts=(s, s), dims=(1, 2))
    return out[:, :h, :wd]


def make_block(cls, res=6, window=4, dim=8, heads=2):
    torch.manual_seed(0)
    return cls(dim, (res, res), num_heads=heads, window_size=window, shift_size=window // 2,
               always_partition=True, dynamic_mask=True).eval()  # fmt: skip


@pytest.mark.parametrize("res", [5, 6, 7])
def test_padding_happens_before_the_shift(res):
    block = make_block(SwinBlock, res=res)
    x = torch.randn(2, res, res, 8)  # not a multiple of the window 4: padded to 8
    with torch.no_grad():
        ours = block._attn(x)
        ref = reference_shifted_window_attention(block, x)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_timm_order_differs_when_padding_is_needed():
    # documents why SwinBlock exists: timm rolls first, then pads; the two group tokens differently
    # when the padding exceeds the shift (5 -> 8 with shift 2 here; 56 -> 60 with shift 6 for
    # Swin-S@224 with window 12, the official COCO+LVIS config)
    ours = make_block(SwinBlock, res=5)
    timm_block = make_block(SwinTransformerBlock, res=5)
    timm_block.load_state_dict(ours.state_dict())
    x = torch.randn(1, 5, 5, 8)
    with torch.no_grad():
        assert not torch.allclose(ours._attn(x), timm_block._attn(x), atol=1e-4)
        # without padding (8 = 2 windows) both orders agree
        x8 = torch.randn(1, 8, 8, 8)
        torch.testing.assert_close(ours._attn(x8), timm_block._attn(x8), rtol=1e-5, atol=1e-5)


def test_feature_map_no_larger_than_the_window_is_still_shifted():
    # official Swin: a 7x7 map with window 7 keeps shift 3 and its mask (no special case)
    block = make_block(SwinBlock, res=7, window=7)
    assert block.shift_size == (3, 3) and block.window_size == (7, 7)
    x = torch.randn(1, 7, 7, 8)
    with torch.no_grad():
        torch.testing.assert_close(block._attn(x), reference_shifted_window_attention(block, x), rtol=1e-5, atol=1e-5)
