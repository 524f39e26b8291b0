"""Pretrained backbones from local files: MAE/timm ViT and ImageNet Swin (timm and original layout)."""
from __future__ import annotations

import re

import pytest
import torch

from icmformer.models.registry import create_model, tiny_overrides
from icmformer.models.vit import resize_pos_embed


def tiny(name, **extra):
    return create_model(name, **{**tiny_overrides(name), **extra})


def fake_mae_checkpoint(dim=32, depth=4, heads=2, grid=14, patch=16, seed=0):
    """A state dict shaped like MAE's ViT (cls token + pos embed with a cls row, decoder keys)."""
    import timm

    torch.manual_seed(seed)
    vit = timm.create_model("vit_base_patch16_224", pretrained=False, embed_dim=dim, depth=depth, num_heads=heads,
                            img_size=grid * patch, num_classes=0)  # fmt: skip
    sd = vit.state_dict()
    sd["decoder_embed.weight"] = torch.zeros(4, dim)
    sd["mask_token"] = torch.zeros(1, 1, dim)
    return {"model": sd}


def test_mae_vit_weights_load_and_pos_embed_is_interpolated(tmp_path):
    ckpt = fake_mae_checkpoint()
    torch.save(ckpt, tmp_path / "mae.pth")
    model = create_model("icmformer_vit_base_448", pretrained_backbone=tmp_path / "mae.pth", **tiny_overrides("icmformer_vit_base_448"))  # grid 4x4
    sd = ckpt["model"]
    for k in ("blocks.0.attn.qkv.weight", "blocks.3.mlp.fc2.bias", "patch_embed.proj.weight"):
        assert torch.equal(model.backbone.state_dict()[k], sd[k])
    expected = resize_pos_embed(sd["pos_embed"][:, 1:], (14, 14), (4, 4))
    torch.testing.assert_close(model.backbone.pos_embed.data, expected)
    # the cross blocks and the click embedding keep their initialisation
    assert not torch.equal(model.backbone.cross_blocks[0].attn2.q.weight, torch.zeros_like(model.backbone.cross_blocks[0].attn2.q.weight))


def test_safetensors_weights_file(tmp_path):
    from safetensors.torch import save_file

    sd = fake_mae_checkpoint()["model"]
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "vit.safetensors"))
    from icmformer.models.pretrained import load_pretrained_backbone

    model = tiny("icmformer_vit_base_448")
    report = load_pretrained_backbone(model, tmp_path / "vit.safetensors")
    assert "pos_embed" in report["loaded"] and "cls_token" in report["ignored"]
    assert any(k.startswith("decoder") for k in report["ignored"])


def test_mismatched_vit_weights_name_the_file_and_the_model(tmp_path):
    torch.save(fake_mae_checkpoint(dim=48, heads=2), tmp_path / "vit_large.pth")
    with pytest.raises(ValueError, match=r"vit_large\.pth does not fit the VIT backbone of icmformer_vit_base_448.*embed_dim=32"):
        create_model("icmformer_vit_base_448", pretrained_backbone=tmp_path / "vit_large.pth", **tiny_overrides("icmformer_vit_base_448"))


def test_missing_weights_file_says_where_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"mae_pretrain_vit_base.pth.*data/README.md"):
        create_model("icmformer_vit_base_448", pretrained_backbone=tmp_path / "mae_pretrain_vit_base.pth", **tiny_overrides("icmformer_vit_base_448"))


def _timm_swin(seed=0):
    import timm

    torch.manual_seed(seed)
    return timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, embed_dim=16, depths=(2, 2, 2, 2),
                             num_heads=(1, 2, 4, 8), window_size=4, img_size=64, num_classes=10)  # fmt: skip


def test_swin_weights_timm_layout(tmp_path):
    swin = _timm_swin()
    torch.save(swin.state_dict(), tmp_path / "swin.pth")
    model = create_model("icmformer_swin_base_384", pretrained_backbone=tmp_path / "swin.pth", **tiny_overrides("icmformer_swin_base_384"))
    ref = swin.state_dict()
    ours = model.backbone.state_dict()
    for k in ("patch_embed.proj.weight", "layers.0.blocks.1.attn.relative_position_bias_table", "layers.2.downsample.reduction.weight",
              "layers.3.blocks.1.mlp.fc1.weight"):  # fmt: skip
        assert torch.equal(ours[k], ref[k])


def test_swin_weights_original_layout(tmp_path):
    # the original Swin release merges patches at the end of stages 0-2 (layers.{i}.downsample)
    swin = _timm_swin(seed=1)
    original = {}
    for k, v in swin.state_dict().items():
        m = re.match(r"layers\.(\d+)\.downsample\.(.*)", k)
        original[f"layers.{int(m.group(1)) - 1}.downsample.{m.group(2)}" if m else k.replace("head.fc.", "head.")] = v
    torch.save({"model": original}, tmp_path / "swin_original.pth")
    model = create_model("icmformer_swin_base_384", pretrained_backbone=tmp_path / "swin_original.pth", **tiny_overrides("icmformer_swin_base_384"))
    assert torch.equal(model.backbone.state_dict()["layers.1.downsample.reduction.weight"], swin.state_dict()["layers.1.downsample.reduction.weight"])


def test_vit_weights_into_swin_is_an_error(tmp_path):
    torch.save(fake_mae_checkpoint(), tmp_path / "vit.pth")
    with pytest.raises(ValueError, match="vit.pth"):
        create_model("icmformer_swin_base_384", pretrained_backbone=tmp_path / "vit.pth", **tiny_overrides("icmformer_swin_base_384"))
