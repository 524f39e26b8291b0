"""The annotation and attention notebooks run headless under papermill with a tiny model."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from icmformer.models.checkpoint import save_checkpoint
from icmformer.models.factory import DEFAULT_PRETRAINED_MODEL
from icmformer.models.registry import create_model, tiny_overrides

pm = pytest.importorskip("papermill")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAME = "icmformer_vit_tiny_224"
CLICKS = [[[120, 122, True], [200, 40, False]], [[90, 250, True]]]  # two objects on the demo image


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    d = tmp_path_factory.mktemp("nb_ckpt")
    torch.manual_seed(0)
    save_checkpoint(create_model(NAME, **tiny_overrides(NAME)), d / "xy.safetensors")
    torch.manual_seed(1)
    save_checkpoint(create_model(NAME, **tiny_overrides(NAME), cross_variant="X,Y,YX"), d / "yx.safetensors")
    return d


def execute(name: str, tmp_path: Path, **parameters) -> dict:
    out = tmp_path / f"{name}.out.ipynb"
    pm.execute_notebook(
        str(NOTEBOOKS / f"{name}.ipynb"), str(out), parameters=parameters, kernel_name="python3",
        cwd=str(tmp_path), progress_bar=False, execution_timeout=120,
    )  # fmt: skip
    return json.loads(out.read_text())


def outputs(nb: dict) -> tuple[str, list[str]]:
    """All text of the outputs, and the MIME types they carry."""
    text, mimes = [], []
    for cell in nb["cells"]:
        for o in cell.get("outputs", []):
            if "text" in o:
                text.append("".join(o["text"]))
            for mime, data in o.get("data", {}).items():
                mimes.append(mime)
                if mime in ("text/plain", "text/html"):
                    text.append("".join(data) if isinstance(data, list) else data)
    return "\n".join(text), mimes


def test_notebooks_are_paired_with_their_scripts():
    import jupytext

    for name in ("annotate", "attention"):
        nb = jupytext.read(NOTEBOOKS / f"{name}.ipynb")
        py = jupytext.read(NOTEBOOKS / f"{name}.py")
        assert [c.source for c in nb.cells] == [c.source for c in py.cells], f"{name}.ipynb and {name}.py differ: run jupytext --sync"
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1


def test_annotate_replays_exports_and_resumes(checkpoints, tmp_path):
    ckpt = str(checkpoints / "xy.safetensors")
    nb = execute("annotate", tmp_path, checkpoint=ckpt, clicks=CLICKS, output_dir=str(tmp_path / "first"), export=True)
    text, mimes = outputs(nb)
    assert "replayed 3 click(s) on 2 object(s)" in text and "per-click latency" in text
    assert "image encodings" in text and "UNTRAINED" not in text
    assert "application/vnd.jupyter.widget-view+json" in mimes and "image/png" in mimes
    first = tmp_path / "first"
    names = sorted(p.name for p in first.iterdir())
    assert names == ["demo_clicks.json", "demo_coco.json", "demo_object_1.png", "demo_object_2.png"]
    doc = json.loads((first / "demo_clicks.json").read_text())
    assert [o["clicks"] for o in doc["objects"]] == CLICKS and doc["model"]["checkpoint"] == ckpt

    # resume from the click file, add a third object, export elsewhere: objects 1-2 are reproduced
    nb = execute("annotate", tmp_path, checkpoint=ckpt, resume=str(first / "demo_clicks.json"),
                 clicks=[[60, 60, True]], output_dir=str(tmp_path / "second"), export=True)  # fmt: skip
    text, _ = outputs(nb)
    assert "resumed 2 object(s)" in text
    second = tmp_path / "second"
    for k in (1, 2):
        np.testing.assert_array_equal(np.array(Image.open(first / f"demo_object_{k}.png")), np.array(Image.open(second / f"demo_object_{k}.png")))
    assert json.loads((second / "demo_clicks.json").read_text())["objects"][2]["clicks"] == [[60, 60, True]]


def test_annotate_uses_the_shipped_model_by_default(tmp_path):
    nb = execute("annotate", tmp_path, output_dir=str(tmp_path / "o"), clicks=[[60, 60, True]])
    text, _ = outputs(nb)
    name = DEFAULT_PRETRAINED_MODEL
    assert f"model: {name}, checkpoint: " in text and f"{name}.safetensors" in text
    assert "UNTRAINED" not in text and "replayed 1 click(s) on 1 object(s)" in text


def test_annotate_without_weights_warns_loudly(tmp_path):
    nb = execute("annotate", tmp_path, output_dir=str(tmp_path / "o"), pretrained=False, model_name="icmformer_vit_tiny_224")
    text, _ = outputs(nb)
    assert "WARNING: no checkpoint given" in text and "UNTRAINED" in text
    assert "results/runs/vit/model.safetensors" in text
    assert not (tmp_path / "o").exists()  # export=False: nothing written


def test_attention_compares_two_checkpoints(checkpoints, tmp_path):
    nb = execute(
        "attention", tmp_path, checkpoint=str(checkpoints / "xy.safetensors"), checkpoint_b=str(checkpoints / "yx.safetensors"),
        clicks=[[120, 122, True], [200, 40, False]], output_dir=str(tmp_path / "figs"),
    )  # fmt: skip
    text, mimes = outputs(nb)
    assert mimes.count("image/png") >= 4
    assert "2 cross blocks, 2 heads, grid 4x4" in text
    assert "X,Y,XY: where the click token looks in the image" in text
    assert "X,Y,YX: which click tokens the image token under the click looks at" in text
    assert "UNTRAINED" not in text
    figs = sorted(p.name for p in (tmp_path / "figs").iterdir())
    assert figs == ["attention_a.png", "attention_b.png", "click_features_a.png", "comparison.png"]
    assert Image.open(tmp_path / "figs" / "comparison.png").size[0] > 400


def test_attention_cross_variants_of_an_untrained_model(tmp_path):
    overrides = {k: list(v) if isinstance(v, tuple) else v for k, v in tiny_overrides(NAME).items()}  # JSON-able for papermill
    nb = execute("attention", tmp_path, model_overrides=overrides, cross_variants=["X,Y,XY", "X,XY"], query_click=-1, max_heads=1)
    text, mimes = outputs(nb)
    assert "WARNING: no checkpoint given" in text
    assert f"{NAME} X,Y,XY" in text and f"{NAME} X,XY" in text
    assert mimes.count("image/png") >= 4
