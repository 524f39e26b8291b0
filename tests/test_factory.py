"""The model factory: shipped weights (``pretrained=True``), one loader for every kind of weights,
no import cycle between the registry and the checkpoint formats, ``--pretrained`` on the CLI."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import icmformer
from icmformer.cli import main
from icmformer.models import factory
from icmformer.models.checkpoint import save_checkpoint
from icmformer.models.registry import tiny_overrides

NAME = "icmformer_vit_base_448"  # shrunk with tiny_overrides, which the weights file records
OTHER = "icmformer_vit_tiny_224"


@pytest.fixture
def weights(tmp_path, monkeypatch):
    """A weights folder holding shipped weights for NAME (and nothing else)."""
    d = tmp_path / "weights"
    monkeypatch.setenv(factory.WEIGHTS_ENV, str(d))
    assert factory.list_models(pretrained=True) == []  # the folder does not exist yet
    torch.manual_seed(1)
    model = icmformer.create_model(NAME, **tiny_overrides(NAME))
    save_checkpoint(model, d / f"{NAME}.safetensors")
    return d, model


def same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_pretrained_loads_the_shipped_weights(weights):
    d, model = weights
    assert factory.weights_dir() == d
    assert icmformer.list_models(pretrained=True) == [NAME]
    assert set(icmformer.list_models()) >= {NAME, OTHER}
    loaded = icmformer.create_model(NAME, pretrained=True)
    assert same_weights(loaded, model) and loaded.config == model.config
    fresh = icmformer.create_model(NAME, **tiny_overrides(NAME))
    assert not same_weights(fresh, model)  # pretrained=False: initial weights
    # a shape-keeping override on top of the shipped weights
    assert icmformer.create_model(NAME, pretrained=True, head_dropout=0.2).config.head_dropout == 0.2


def test_models_without_weights_get_a_one_line_error(weights):
    with pytest.raises(ValueError, match=rf"{OTHER}.*ships no pretrained weights.*models with weights: {NAME}") as info:
        icmformer.create_model(OTHER, pretrained=True)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="not both"):
        icmformer.create_model(NAME, pretrained=True, checkpoint=weights[0] / f"{NAME}.safetensors")
    with pytest.raises(ValueError, match="checkpoint=PATH"):
        icmformer.create_model(NAME, "some/file.safetensors")
    (weights[0] / f"{OTHER}.safetensors").write_bytes((weights[0] / f"{NAME}.safetensors").read_bytes())
    with pytest.raises(ValueError, match=f"for model '{NAME}', not '{OTHER}'"):
        icmformer.create_model(OTHER, pretrained=True)


def test_no_model_ships_weights_here(tmp_path, monkeypatch):
    monkeypatch.setenv(factory.WEIGHTS_ENV, str(tmp_path))
    with pytest.raises(ValueError, match="none in this installation"):
        icmformer.create_model(OTHER, pretrained=True)


def test_load_model_covers_every_source(weights, tmp_path):
    d, model = weights
    ckpt = d / f"{NAME}.safetensors"
    assert same_weights(factory.load_model(ckpt), model) and factory.load_model(ckpt).checkpoint_path == str(ckpt)
    shipped = factory.load_model(model_name=NAME, pretrained=True)
    assert same_weights(shipped, model) and shipped.checkpoint_path == str(ckpt) and not shipped.training
    assert factory.load_model(model_name=OTHER).checkpoint_path is None  # untrained
    for kwargs, msg in [({}, "give a checkpoint"), ({"checkpoint": ckpt, "pretrained": True}, "not both"),
                        ({"pretrained": True}, "give a checkpoint")]:  # fmt: skip
        with pytest.raises(ValueError, match=msg):
            factory.load_model(**kwargs)


def test_registry_and_formats_import_no_model_building_code():
    code = (
        "import sys, icmformer.models.registry\n"
        "assert 'icmformer.models.checkpoint' not in sys.modules, 'the registry imports a checkpoint format'\n"
        "import icmformer.models.checkpoint, icmformer.models.official\n"
        "assert 'icmformer.models.factory' not in sys.modules, 'a format or the registry imports the factory'\n"
        "from icmformer.models.registry import create_model\n"  # the old paths still work (lazily)
        "from icmformer.models.checkpoint import load_checkpoint, read_official\n"
        "import icmformer.models.factory as f\n"
        "assert create_model is f.create_model and load_checkpoint is f.load_checkpoint\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_pretrained_flag(weights, tmp_path, capsys, monkeypatch):
    d, model = weights
    img = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 60, 3), dtype=np.uint8)).save(img)
    base = ["predict", "--image", str(img), "--click", "20,30,+", "--no-flip"]
    assert main([*base, "--model", NAME, "--pretrained", "--out", str(tmp_path / "a.png"), "--prob-out", str(tmp_path / "a.npy")]) == 0
    assert "UNTRAINED" not in capsys.readouterr().err
    assert main([*base, "--checkpoint", str(d / f"{NAME}.safetensors"), "--out", str(tmp_path / "b.png"),
                 "--prob-out", str(tmp_path / "b.npy")]) == 0  # fmt: skip
    assert np.array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))
    capsys.readouterr()
    assert main([*base, "--model", OTHER, "--pretrained", "--out", str(tmp_path / "c.png")]) == 1
    err = capsys.readouterr().err.strip()
    assert "ships no pretrained weights" in err and len(err.splitlines()) == 1

    monkeypatch.delenv("ICMFORMER_SHARED_DATA", raising=False)  # time a synthetic image
    args = ["bench", "--model", NAME, "--pretrained", "--modes", "optimised", "--clicks", "1", "--repeats", "1", "--json"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["model"] == f"{NAME} (shipped weights)"


def test_evaluate_cli_pretrained(weights, shared_data, tmp_path, capsys):
    out = tmp_path / "ev"
    args = ["evaluate", "--model", NAME, "--pretrained", "--datasets", "GrabCut", "--data-root", str(shared_data),
            "--out", str(out), "--limit", "1", "--max-clicks", "2", "--quiet", "--device", "cpu"]  # fmt: skip
    assert main(args) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["pretrained"].endswith(f"{NAME}.safetensors") and "untrained" not in run
    capsys.readouterr()
    assert main(["evaluate", "--pretrained", "--checkpoint", "x.safetensors", "--datasets", "GrabCut",
                 "--data-root", str(shared_data), "--out", str(tmp_path / "x")]) == 1  # fmt: skip
    assert "--pretrained needs --model" in capsys.readouterr().err
