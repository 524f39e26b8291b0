"""Stand-in backbone files in the exact upstream layouts (icmformer.pipeline.weights) load into the paper models."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from icmformer import create_model
from icmformer.pipeline.weights import UPSTREAM, relative_position_index, upstream_state_dict, write_upstream_weights


def test_mae_layout_keys_and_shapes():
    sd = upstream_state_dict("mae_pretrain_vit_base.pth")
    assert sd["pos_embed"].shape == (1, 197, 768) and sd["cls_token"].shape == (1, 1, 768)
    assert sd["patch_embed.proj.weight"].shape == (768, 3, 16, 16)
    assert sd["blocks.11.attn.qkv.weight"].shape == (2304, 768) and sd["blocks.11.mlp.fc1.weight"].shape == (3072, 768)
    assert "norm.weight" in sd and not any(k.startswith(("decoder", "head", "mask_token")) for k in sd)
    assert len(sd) == 4 + 12 * 12 + 2
    assert sum(v.numel() for v in sd.values()) == 85_798_656  # MAE ViT-B encoder (86M, with cls/pos)


def test_swin_layout_keys_and_shapes():
    sd = upstream_state_dict("swin_base_patch4_window12_384_22k.pth")
    assert sd["layers.0.blocks.0.attn.relative_position_bias_table"].shape == (23 * 23, 4)
    assert sd["layers.0.blocks.1.attn_mask"].shape == (64, 144, 144)   # 96/12 = 8 x 8 windows
    assert "layers.3.blocks.1.attn_mask" not in sd                      # 12 x 12 stage = one window, no shift
    assert sd["layers.2.downsample.reduction.weight"].shape == (1024, 2048) and "layers.3.downsample.reduction.weight" not in sd
    assert sd["head.weight"].shape == (21841, 1024) and sd["norm.weight"].shape == (1024,)
    small = upstream_state_dict("swin_small_patch4_window7_224.pth")
    assert small["head.weight"].shape == (1000, 768) and small["layers.2.blocks.17.attn.qkv.weight"].shape == (1152, 384)
    idx = relative_position_index(7)
    assert idx.shape == (49, 49) and idx.dtype == torch.int64 and idx.min() == 0 and idx.max() == 13 * 13 - 1
    assert idx[0, 0] == idx[48, 48] == (13 * 13 - 1) // 2


@pytest.mark.parametrize("model,name", [
    pytest.param("icmformer_vit_base_448", "mae_pretrain_vit_base.pth", marks=pytest.mark.slow),  # 343 MB file
    pytest.param("icmformer_swin_base_384", "swin_base_patch4_window12_384_22k.pth", marks=pytest.mark.slow),  # 451 MB
    ("icmformer_swin_small_224", "swin_small_patch4_window7_224.pth"),
])
def test_written_files_load_into_the_paper_models(tmp_path, model, name):
    (path,) = write_upstream_weights(tmp_path, [name])
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert list(raw) == ["model"]
    net = create_model(model, pretrained_backbone=path)
    key = "blocks.0.attn.qkv.weight" if "vit" in model else "layers.1.blocks.0.mlp.fc1.weight"
    assert torch.equal(net.backbone.state_dict()[key], raw["model"][key])
    assert write_upstream_weights(tmp_path, [name]) == []  # an existing file is kept


def test_unknown_name_is_a_one_line_error(tmp_path):
    with pytest.raises(ValueError, match="unknown upstream weights file"):
        write_upstream_weights(tmp_path, ["resnet50.pth"])
    out = subprocess.run([sys.executable, "-m", "icmformer.pipeline.weights", str(tmp_path), "resnet50.pth"],
                         capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 2 and "resnet50.pth" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    listed = subprocess.run([sys.executable, "-m", "icmformer.pipeline.weights", "--list"], capture_output=True, text=True)
    assert listed.returncode == 0 and set(listed.stdout.split()) == set(UPSTREAM)
