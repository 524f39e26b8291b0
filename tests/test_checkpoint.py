"""Checkpoints: our safetensors format, official (isegm) checkpoints, conversion, errors."""
from __future__ import annotations

import json

import pytest
import torch

from icmformer.cli import main as cli
from icmformer.models.checkpoint import (
    convert_official_state_dict,
    load_checkpoint,
    read_metadata,
    save_checkpoint,
    to_official_state_dict,
)
from icmformer.models.clicks import clicks_to_tensor
from icmformer.models.registry import create_model, tiny_overrides

from official_reference import official_vit_forward

NAMES = ["icmformer_vit_base_448", "icmformer_swin_base_384", "icmformer_swin_small_224"]


def tiny(name, **extra):
    return create_model(name, **{**tiny_overrides(name), **extra})


def same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("name", NAMES)
def test_safetensors_round_trip_is_bit_exact(name, tmp_path):
    model = tiny(name, cross_variant="X,Y,YX")
    path = save_checkpoint(model, tmp_path / "m.safetensors", metadata={"epoch": 3})
    meta = read_metadata(path)
    assert meta["format"] == "icmformer" and meta["model"] == name and json.loads(meta["epoch"]) == 3
    loaded = load_checkpoint(path)
    assert same_weights(model, loaded)
    assert loaded.config == model.config
    assert not loaded.training
    # no temp file left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


@pytest.mark.parametrize("name", NAMES)
def test_official_layout_round_trip(name, tmp_path):
    model = tiny(name)
    official = to_official_state_dict(model)
    # the official checkpoint holds the unused keys too, with the cls row on pos_embed
    if name.startswith("icmformer_vit"):
        assert official["backbone.pos_embed"].shape[1] == model.backbone.pos_embed.shape[1] + 1
        assert "backbone.cls_token" in official and "backbone.blocks2.0.attn2.qkv.weight" in official
    else:
        assert "backbone.layers.0.downsample.reduction.weight" in official
    assert "head.up_conv1.0.weight" in official
    converted = convert_official_state_dict(official)
    assert converted.keys() == model.state_dict().keys()
    torch.save({"state_dict": official, "config": {"class": "isegm.model.X", "params": {}}}, tmp_path / "official.pth")
    loaded = load_checkpoint(tmp_path / "official.pth")
    assert same_weights(model, loaded)


def test_official_checkpoint_with_pickled_classes_loads_safely(tmp_path, monkeypatch):
    # official checkpoints pickle isegm objects in their config (e.g. its CrossEntropyLoss); we
    # must not need (or run) them: they become inert placeholders
    import pickle
    import sys
    import types

    ran = []

    class CrossEntropyLoss:  # stands in for an isegm class
        def __init__(self):
            self.loss_weight = 1.0

        def __setstate__(self, state):  # would run if the real class were imported
            ran.append(state)

    mod = types.ModuleType("isegm.model.losses")
    CrossEntropyLoss.__module__, CrossEntropyLoss.__qualname__ = mod.__name__, "CrossEntropyLoss"
    mod.CrossEntropyLoss = CrossEntropyLoss
    for name in ("isegm", "isegm.model", "isegm.model.losses"):
        monkeypatch.setitem(sys.modules, name, mod)

    model = tiny("icmformer_vit_base_448")
    payload = {"state_dict": to_official_state_dict(model), "config": {"class": "isegm.X", "params": {"loss": CrossEntropyLoss()}}}
    path = tmp_path / "official.pth"
    for proto in (2, pickle.HIGHEST_PROTOCOL):
        torch.save(payload, path, pickle_protocol=proto)
        loaded = load_checkpoint(path)
        assert same_weights(model, loaded)
    assert ran == []

    class Gadget:  # a global outside isegm and outside the allowlist: refused, never called
        def __reduce__(self):
            return (print, ("this must never run",))

    torch.save({"state_dict": to_official_state_dict(model), "config": {"x": Gadget()}}, path)
    with pytest.raises(ValueError, match="refused official checkpoint: global .*print is not allowed"):
        load_checkpoint(path)


def test_official_weights_give_official_logits():
    """Our model with converted official weights == an independent official forward (OFFICIAL.md)."""
    torch.manual_seed(1)
    # 448 px with 16 px patches: 2x2 windows of 14x14 tokens; depth 8 -> blocks 2,4,6,8 global,
    # two cross blocks (the first windowed, the second global): every official code path runs.
    model = create_model("icmformer_vit_base_448", embed_dim=32, depth=8, num_heads=2, neck_dims=(8, 16, 32, 64), head_channels=16).eval()
    assert model.config.resolved_global_every == 2 and model.config.resolved_num_cross_blocks == 2
    with torch.no_grad():
        for p in model.parameters():  # non-trivial norms and biases
            p.add_(0.02 * torch.randn_like(p))
    official = to_official_state_dict(model)
    g = torch.Generator().manual_seed(0)
    image = torch.rand(2, 3, 448, 448, generator=g)
    prev = torch.rand(2, 1, 448, 448, generator=g)
    clicks = [[(100.0, 300.5, True), (250.0, 40.0, False)], [(5.0, 440.0, True)]]
    # official point layout: (B, 2P, 3), positives first, then negatives, (-1, -1, -1) padding
    points = torch.full((2, 2, 3), -1.0)
    points[0, 0] = torch.tensor([100.0, 300.5, 0])
    points[0, 1] = torch.tensor([250.0, 40.0, 1])
    points[1, 0] = torch.tensor([5.0, 440.0, 0])
    expected = official_vit_forward(official, image, prev, points, heads=2, depth=8)
    with torch.no_grad():
        ours = model(image, clicks_to_tensor(clicks), prev)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)


def test_checkpoint_of_another_model_is_summarised(tmp_path):
    path = save_checkpoint(tiny("icmformer_vit_base_448"), tmp_path / "vit.safetensors")
    other = tiny("icmformer_vit_base_448", embed_dim=48, num_heads=2)
    from icmformer.models.checkpoint import load_weights

    with pytest.raises(ValueError, match=r"shape mismatches \(\d+\)"):
        load_weights(other, path)
    swin = tiny("icmformer_swin_base_384")
    with pytest.raises(ValueError, match=r"missing keys \(\d+\).*\n.*unexpected keys \(\d+\)"):
        load_weights(swin, path)


def test_bad_checkpoint_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        load_checkpoint(tmp_path / "nope.safetensors")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="junk.pth"):
        load_checkpoint(junk)
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(ValueError, match="not an icmformer checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(ValueError, match=r"\.safetensors"):
        save_checkpoint(tiny("icmformer_vit_base_448"), tmp_path / "m.pth")


def test_convert_official_cli(tmp_path, capsys):
    model = tiny("icmformer_swin_small_224")
    torch.save({"state_dict": to_official_state_dict(model), "config": {}}, tmp_path / "o.pth")
    out = tmp_path / "o.safetensors"
    assert cli(["convert-official", str(tmp_path / "o.pth"), str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    assert same_weights(model, load_checkpoint(out))
    # refuses to overwrite without --force, says why
    assert cli(["convert-official", str(tmp_path / "o.pth"), str(out)]) == 1
    assert "--force" in capsys.readouterr().err
