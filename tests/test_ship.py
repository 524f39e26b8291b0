"""Shipping a trained run as package weights (icmformer.pipeline.ship)."""
from __future__ import annotations

import json

import pytest
import torch

from icmformer.models.checkpoint import read_metadata, save_checkpoint
from icmformer.models.factory import create_model, list_models, load_checkpoint
from icmformer.pipeline.ship import cpu_hours, main, read_val_log, ship

SMALL = dict(embed_dim=32, depth=2, num_heads=2, img_size=64, neck_dims=(8, 16, 32, 64), head_channels=16, stem_channels=8)


def _rows():
    return [
        {"step": 10, "images_seen": 80, "train_time_s": 1800.0, "threads": 2, "noc85": 19.0, "noc90": 19.5,
         "nof90": 3, "miou": [0.2, 0.3, 0.4], "seconds": 600.0},
        {"step": 20, "images_seen": 160, "train_time_s": 4200.0, "threads": 2, "noc85": 15.0, "noc90": 17.0,
         "nof90": 2, "miou": [0.3, 0.45, 0.5], "seconds": 300.0},
    ]  # fmt: skip


def _run(tmp_path):
    run = tmp_path / "run"
    model = create_model("icmformer_vit_demo_224", **SMALL)
    save_checkpoint(model, run / "model.safetensors")
    (run / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows()))
    (run / "train_summary.json").write_text(json.dumps({"steps": 20}))
    return run, model


def test_cpu_hours_leave_out_the_validation_time():
    # 1800 s then 4200 s of wall time, of which the first validation took 600 s; 2 threads
    assert cpu_hours(_rows()) == pytest.approx([1.0, (4200 - 600) * 2 / 3600])


def test_ship_writes_fp16_weights_that_load_as_pretrained(tmp_path, monkeypatch):
    run, model = _run(tmp_path)
    out = ship(run, weights_dir=tmp_path / "weights", results_dir=tmp_path / "res", fp16=True)
    w = tmp_path / "weights" / "icmformer_vit_demo_224.safetensors"
    assert out["weights"] == str(w) and out["val_rows"] == 2
    meta = read_metadata(w)
    assert meta["dtype"] == "float16" and json.loads(meta["train_steps"]) == 20
    assert (tmp_path / "res" / "val_curve.png").stat().st_size > 1000
    assert read_val_log(tmp_path / "res" / "val.jsonl") == [{**r, "phase": 1} for r in _rows()]
    monkeypatch.setenv("ICMFORMER_WEIGHTS_DIR", str(tmp_path / "weights"))
    assert "icmformer_vit_demo_224" in list_models(pretrained=True)
    shipped = create_model("icmformer_vit_demo_224", pretrained=True, **SMALL).eval()
    model.eval()
    image, clicks = torch.rand(1, 3, 64, 64), torch.tensor([[[30.0, 30.0, 1.0]]])
    with torch.no_grad():
        a, b = model(image, clicks), shipped(image, clicks)
    assert next(shipped.parameters()).dtype == torch.float32
    assert (a - b).abs().max() < 5e-2 and not torch.equal(a, b)  # fp16 rounding, nothing else


def test_ship_errors_are_one_line(tmp_path, capsys):
    run, _ = _run(tmp_path)
    (run / "val.jsonl").write_text('{"step": 1}\nnot json\n')
    assert main(["--run", str(run), "--weights-dir", str(tmp_path / "w"), "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "val.jsonl:2" in err and "\n" not in err
    assert main(["--run", str(tmp_path / "nowhere")]) == 2
    assert "no trained weights" in capsys.readouterr().err


def test_ship_keeps_float32_by_default(tmp_path, monkeypatch):
    run, model = _run(tmp_path)
    ship(run, weights_dir=tmp_path / "w", results_dir=tmp_path / "r")
    assert read_metadata(tmp_path / "w" / "icmformer_vit_demo_224.safetensors")["dtype"] == "float32"
    monkeypatch.setenv("ICMFORMER_WEIGHTS_DIR", str(tmp_path / "w"))
    shipped = create_model("icmformer_vit_demo_224", pretrained=True, **SMALL)
    for (k, v), (_, w) in zip(model.state_dict().items(), shipped.state_dict().items()):
        assert torch.equal(v, w), k


def test_ship_joins_the_phases_of_one_model(tmp_path):
    first, _ = _run(tmp_path)
    (first / "train_summary.json").write_text(json.dumps({"steps": 20, "images_seen": 160, "train_time_s_total": 4500.0}))
    second = tmp_path / "run2"
    model2 = create_model("icmformer_vit_demo_224", **SMALL)
    save_checkpoint(model2, second / "model.safetensors")
    (second / "val.jsonl").write_text(json.dumps({**_rows()[1], "step": 5, "images_seen": 40, "train_time_s": 100.0,
                                                  "noc90": 12.0, "seconds": 50.0}) + "\n")  # fmt: skip
    (second / "train_summary.json").write_text(json.dumps({"steps": 5, "images_seen": 40, "train_time_s_total": 160.0}))
    out = ship([first, second], weights_dir=tmp_path / "w", results_dir=tmp_path / "r")
    assert out["phases"] == 2 and out["val_rows"] == 3
    rows = read_val_log(tmp_path / "r" / "val.jsonl")
    # the second phase continues the first's counts: steps, images and time from the first start
    assert [(r["phase"], r["step"], r["images_seen"], r["train_time_s"]) for r in rows] == [
        (1, 10, 80, 1800.0), (1, 20, 160, 4200.0), (2, 25, 200, 4600.0)]
    summary = json.loads((tmp_path / "r" / "train_summary.json").read_text())
    assert (summary["steps"], summary["images_seen"], summary["train_time_s_total"]) == (25, 200, 4660.0)
    # CPU-hours leave out the 600 + 300 + 50 s of validation; 2 threads
    assert summary["cpu_hours"] == pytest.approx(round((4660 - 950) * 2 / 3600, 2))
    assert len(summary["per_phase"]) == 2
    meta = read_metadata(tmp_path / "w" / "icmformer_vit_demo_224.safetensors")
    assert json.loads(meta["train_steps"]) == 25 and json.loads(meta["phases"]) == 2
    # the weights are the last phase's
    shipped = load_checkpoint(tmp_path / "w" / "icmformer_vit_demo_224.safetensors")
    for (k, v), (_, w) in zip(model2.state_dict().items(), shipped.state_dict().items()):
        assert torch.equal(v, w), k
    # the CLI takes the phases as repeated --run
    assert main(["--run", str(first), "--run", str(second), "--weights-dir", str(tmp_path / "w2"),
                 "--results", str(tmp_path / "r2")]) == 0  # fmt: skip
    assert len(read_val_log(tmp_path / "r2" / "val.jsonl")) == 3


def test_every_shipped_model_has_a_model_card():
    """Each icmformer/weights/NAME.safetensors has NAME.md beside it, naming the model, its training
    data's research-use licences and the command that retrains it."""
    from icmformer.models.factory import weights_dir

    names = list_models(pretrained=True)
    assert names, f"no shipped weights in {weights_dir()}"
    for name in names:
        card = weights_dir() / f"{name}.md"
        assert card.is_file(), f"{card} is missing"
        text = card.read_text()
        assert f"`{name}`" in text and "BSDS500" in text and "research" in text
        assert "icmformer train --config" in text and "pipeline.ship" in text
        meta = read_metadata(weights_dir() / f"{name}.safetensors")
        assert meta["model"] == name, meta


def test_ship_average_is_the_mean_of_the_last_phases_weights(tmp_path, capsys):
    first, model1 = _run(tmp_path)
    second = tmp_path / "run2"
    torch.manual_seed(1)
    model2 = create_model("icmformer_vit_demo_224", **SMALL)
    save_checkpoint(model2, second / "model.safetensors")
    (second / "val.jsonl").write_text(json.dumps(_rows()[1]) + "\n")
    ship([first, second], weights_dir=tmp_path / "w", results_dir=tmp_path / "r", average=2)
    shipped = load_checkpoint(tmp_path / "w" / "icmformer_vit_demo_224.safetensors")
    a, b, m = model1.state_dict(), model2.state_dict(), shipped.state_dict()
    changed = 0
    for k, v in m.items():
        if v.is_floating_point():
            assert torch.allclose(v, (a[k] + b[k]) / 2, atol=1e-6), k
            changed += not torch.equal(a[k], b[k])
        else:
            assert torch.equal(v, a[k]), k
    assert changed > 10  # the two phases differ, so the mean is neither of them
    assert json.loads(read_metadata(tmp_path / "w" / "icmformer_vit_demo_224.safetensors")["averaged_phases"]) == 2
    # more phases than runs, or weights of another architecture: one-line errors, exit 2
    assert main(["--run", str(second), "--average", "2", "--weights-dir", str(tmp_path / "w3"), "--results", str(tmp_path / "r3")]) == 2
    assert "--average 2: must be between 1 and the number of runs (1)" in capsys.readouterr().err
    other = tmp_path / "run3"
    save_checkpoint(create_model("icmformer_vit_tiny_224", embed_dim=32, depth=2, num_heads=2, img_size=64), other / "model.safetensors")
    (other / "val.jsonl").write_text(json.dumps(_rows()[1]) + "\n")
    assert main(["--run", str(first), "--run", str(other), "--average", "2", "--weights-dir", str(tmp_path / "w4"),
                 "--results", str(tmp_path / "r4")]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot be averaged" in err
    assert not (tmp_path / "w4").exists()


def test_ship_continues_from_an_earlier_ship_and_averages_with_its_file(tmp_path, capsys):
    # phases 1-2 shipped (averaged), then phase 3 trained from the shipped file on a machine without
    # the phase-1/2 run folders: `--run <earlier results> --run phase3 --average-with <shipped file>`
    first, model1 = _run(tmp_path)
    second = tmp_path / "run2"
    torch.manual_seed(1)
    save_checkpoint(create_model("icmformer_vit_demo_224", **SMALL), second / "model.safetensors")
    (second / "val.jsonl").write_text(json.dumps(_rows()[1]) + "\n")
    (second / "train_summary.json").write_text(json.dumps({"steps": 30, "images_seen": 240, "train_time_s_total": 5000.0}))
    ship([first, second], weights_dir=tmp_path / "w", results_dir=tmp_path / "r", average=2)
    earlier = read_val_log(tmp_path / "r" / "val.jsonl")
    third = tmp_path / "run3"
    torch.manual_seed(2)
    model3 = create_model("icmformer_vit_demo_224", **SMALL)
    save_checkpoint(model3, third / "model.safetensors")
    (third / "val.jsonl").write_text(json.dumps(_rows()[0]) + "\n")
    (third / "train_summary.json").write_text(json.dumps({"steps": 10, "images_seen": 80, "train_time_s_total": 2000.0}))
    shipped_before = tmp_path / "w" / "icmformer_vit_demo_224.safetensors"
    prev = load_checkpoint(shipped_before).state_dict()
    assert main(["--run", str(tmp_path / "r"), "--run", str(third), "--average-with", str(shipped_before),
                 "--weights-dir", str(tmp_path / "w"), "--results", str(tmp_path / "r2")]) == 0  # fmt: skip
    rows = read_val_log(tmp_path / "r2" / "val.jsonl")
    assert rows[:3] == earlier and [r["phase"] for r in rows] == [1, 1, 2, 3]
    # phase 3's row is counted after phases 1 and 2 (20 + 30 steps, 4200 + 5000 s)
    assert rows[3]["step"] == 50 + 10 and rows[3]["train_time_s"] == 9200.0 + 1800.0
    summary = json.loads((tmp_path / "r2" / "train_summary.json").read_text())
    assert summary["phases"] == 3 and summary["steps"] == 60 and len(summary["per_phase"]) == 3
    shipped = load_checkpoint(shipped_before).state_dict()
    c = model3.state_dict()
    for k, v in shipped.items():
        if v.is_floating_point():
            assert torch.allclose(v, (prev[k] + c[k]) / 2, atol=1e-6), k
    meta = read_metadata(shipped_before)
    assert json.loads(meta["phases"]) == 3 and json.loads(meta["averaged_with"]) == [shipped_before.name]
    assert main(["--run", str(third), "--average-with", str(tmp_path / "nope.safetensors"),
                 "--weights-dir", str(tmp_path / "w5"), "--results", str(tmp_path / "r5")]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--average-with" in err and "nope.safetensors" in err
