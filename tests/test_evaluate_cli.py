"""``icmformer evaluate`` end to end on the shared GrabCut set."""
from __future__ import annotations

import json

import pytest
import subprocess
import sys

from icmformer.cli import main
from icmformer.evaluation.runner import read_records


def test_grabcut_limit_2_and_resume(shared_data, tmp_path, capsys):
    out = tmp_path / "gc"
    argv = ["evaluate", "--method", "grabcut", "--datasets", "GrabCut", "--data-root", str(shared_data),
            "--out", str(out), "--limit", "2", "--quiet"]
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "GrabCut" in table and "NoC@90" in table
    recs = read_records(out / "records.jsonl")
    first_two = [p.stem for p in sorted((shared_data / "GrabCut" / "data_GT").iterdir(), key=lambda p: p.name)][:2]
    assert [r["instance_id"] for r in recs] == first_two
    assert all(r["n_clicks"] == 20 and len(r["clicks"]) == 20 for r in recs)
    assert recs[0]["clicks"][0][2] is True  # the first click is positive
    summary = json.loads((out / "summary.json").read_text())
    gc = summary["datasets"]["GrabCut"]
    assert gc["instances"] == 2 and 1 <= gc["NoC@90"] <= 20 and len(gc["mIoU@k"]) == 20
    assert gc["SPC"] > 0 and gc["simulator_s_per_click"] > 0 and gc["warnings"] == 0
    assert summary["config"]["method"] == "grabcut" and "cpu" in summary["device"]
    before = (out / "records.jsonl").read_bytes()
    assert main(argv) == 0  # resumed: nothing left to do
    assert (out / "records.jsonl").read_bytes() == before


def test_errors_are_reported_without_traceback(tmp_path, capsys):
    rc = main(["evaluate", "--method", "grabcut", "--datasets", "GrabCut", "--data-root", str(tmp_path / "none"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 1 and "GrabCut" in err and "not found" in err
    rc = main(["evaluate", "--datasets", "Nope", "--data-root", str(tmp_path)])
    assert rc == 1 and "unknown dataset" in capsys.readouterr().err


def test_model_method_needs_a_model(shared_data, tmp_path, capsys):
    rc = main(["evaluate", "--datasets", "GrabCut", "--data-root", str(shared_data), "--out", str(tmp_path / "m")])
    assert rc == 1 and "--checkpoint" in capsys.readouterr().err


def test_untrained_model_smoke_run(shared_data, tmp_path):
    out = tmp_path / "m"
    rc = main(["evaluate", "--model", "icmformer_vit_tiny_224", "--datasets", "GrabCut,DAVIS", "--data-root", str(shared_data),
               "--out", str(out), "--limit", "1", "--max-clicks", "2", "--quiet", "--device", "cpu"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["target_size"] == 224 and summary["config"]["davis_target_size"] == 336
    assert [d["instances"] for d in summary["datasets"].values()] == [1, 1]
    assert len(read_records(out / "records.jsonl")) == 2


@pytest.mark.parametrize("flag,recorded", [(["--fast"], "int8-dynamic"), (["--fast", "bf16"], "bf16-autocast")])
def test_fast_mode_runs_the_same_protocol_and_is_recorded(shared_data, tmp_path, flag, recorded):
    runs = {}
    for mode in ("exact", "fast"):
        out = tmp_path / mode
        argv = ["evaluate", "--model", "icmformer_vit_tiny_224", "--datasets", "GrabCut", "--data-root", str(shared_data),
                "--out", str(out), "--limit", "1", "--max-clicks", "3", "--quiet", "--device", "cpu", "--no-flip"]
        assert main(argv + (flag if mode == "fast" else [])) == 0
        runs[mode] = json.loads((out / "summary.json").read_text())
    assert runs["fast"]["config"].get("fast") == recorded and "fast" not in runs["exact"]["config"]
    # the same protocol: the first click (the object's centre) does not depend on the model; the
    # masks differ (an untrained model's logits sit near the threshold, so int8 / bf16 noise flips
    # pixels: NoC agreement is measured with a trained model, see README "Speed")
    rec_e, rec_f = (read_records(tmp_path / m / "records.jsonl")[0] for m in ("exact", "fast"))
    assert rec_e["clicks"][0] == rec_f["clicks"][0] and rec_e["n_clicks"] == rec_f["n_clicks"] == 3
    assert rec_e["ious"] != rec_f["ious"]  # the fast model really ran


def test_unknown_fast_mode_is_a_one_line_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["evaluate", "--model", "icmformer_vit_tiny_224", "--fast", "fp8"])
    assert e.value.code == 2 and "invalid choice: 'fp8'" in capsys.readouterr().err


def test_grabcut_path_does_not_import_torch():
    code = (
        "import sys, argparse\n"
        "import icmformer.cli.evaluate as ev, icmformer.evaluation.runner, icmformer.evaluation.baselines\n"
        "import icmformer.data.datasets\n"
        "p = argparse.ArgumentParser(); ev.add_arguments(p)\n"
        "print('torch' in sys.modules)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "False"
