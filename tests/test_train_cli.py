"""``icmformer train``: config errors, a 2-step run and its outputs, resume of a finished run."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import icmformer
from icmformer.cli import main

sys.path.insert(0, str(Path(__file__).parent))
from test_trainer import make_folder_dataset, tiny_config_dict  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_thread(_seed_and_threads):
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: faster, and robust to a busy shared machine
    yield
    torch.set_num_threads(before)


@pytest.fixture
def config_file(tmp_path) -> Path:
    data = make_folder_dataset(tmp_path / "data", n=4)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_config_dict(data, tmp_path / "default_out")))
    return path


def test_unknown_key_fails_naming_it(config_file, tmp_path, capsys):
    rc = main(["train", "--config", str(config_file), "optim.bogus_key=1", "--output-dir", str(tmp_path / "o"), "--quiet"])
    assert rc != 0
    assert "optim.bogus_key" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_bad_key_in_file_and_bad_value(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lr: -1.0\n")
    assert main(["train", "--config", str(bad), "--quiet"]) != 0
    assert "optim.lr" in capsys.readouterr().err
    bad.write_text("batch_sise: 4\n")
    assert main(["train", "--config", str(bad), "--quiet"]) != 0
    assert "batch_sise" in capsys.readouterr().err


def test_missing_dataset_root_is_a_clear_error(config_file, tmp_path, capsys):
    rc = main(["train", "--config", str(config_file), f"data.data_root={tmp_path / 'no_such_data'}",
               "--output-dir", str(tmp_path / "o"), "--quiet"])  # fmt: skip
    assert rc != 0
    err = capsys.readouterr().err
    assert "data.data_root" in err and "no_such_data" in err and "img/ and gt/" in err


def test_two_step_run_outputs_and_resume_of_finished_run(config_file, tmp_path, capsys):
    out = tmp_path / "run"
    # overrides before and after options
    rc = main(["train", "--config", str(config_file), "max_steps=2", "--output-dir", str(out), "--quiet", "log_interval=2"])
    assert rc == 0
    # resolved config: every key, with the override and the output folder
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["max_steps"] == 2 and saved["log_interval"] == 2 and saved["output_dir"] == str(out) and "alpha" in saved["loss"]
    # final weights in our format
    model = icmformer.load_checkpoint(out / "model.safetensors")
    with torch.no_grad():
        logits = model(torch.rand(1, 3, 64, 64), torch.tensor([[[30.0, 30.0, 1.0]]]))
    assert logits.shape == (1, 1, 64, 64)
    # summary
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 2 and summary["finished"] and summary["images_per_s"] > 0
    for key in ("epochs_completed", "wall_time_s", "final_loss", "final_iou", "device"):
        assert key in summary
    # DVCLive metrics, one row per optimiser step
    metrics = json.loads((out / "dvclive" / "metrics.json").read_text())
    assert metrics["step"] == 2 and {"loss", "iou", "lr"} <= set(metrics["train"])
    for name in ("loss", "iou", "lr"):
        rows = (out / "dvclive" / "plots" / "metrics" / "train" / f"{name}.tsv").read_text().split()
        assert len(rows) == 2 + 2 * 2  # header (2 words) + 2 rows of (step, value)
    assert (out / "checkpoints" / "last.pt").is_file()
    capsys.readouterr()
    # resuming a finished run says so and trains nothing
    before = (out / "checkpoints" / "last.pt").stat().st_mtime_ns
    rc = main(["train", "--config", str(config_file), "max_steps=2", "--output-dir", str(out), "--resume", "--quiet"])
    assert rc == 0
    assert "already finished" in capsys.readouterr().out
    assert (out / "checkpoints" / "last.pt").stat().st_mtime_ns == before
    # ... and raising max_steps continues it
    rc = main(["train", "--config", str(config_file), "max_steps=3", "--output-dir", str(out), "--resume", "--quiet"])
    assert rc == 0
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 3 and summary["resumed_from_step"] == 2


def test_resume_if_exists_starts_a_new_run_then_continues_it(config_file, tmp_path, capsys):
    """The pipeline's demo_model stage trains with --resume-if-exists: on a fresh machine it starts
    (plain --resume would fail there), after a stop it continues from the saved state."""
    out = tmp_path / "run"
    args = ["train", "--config", str(config_file), "--output-dir", str(out), "--resume-if-exists", "--quiet"]
    assert main([*args, "max_steps=1"]) == 0
    assert json.loads((out / "train_summary.json").read_text())["steps"] == 1
    assert main([*args, "max_steps=2"]) == 0
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 2 and summary["resumed_from_step"] == 1


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_no_git_or_dvc_side_effects(config_file, tmp_path, monkeypatch):
    """Run inside a git repository without DVC: DVCLive must not `dvc init` or stage anything."""
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    monkeypatch.chdir(repo)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    rc = main(["train", "--config", str(config_file), "max_steps=1", "--output-dir", "run", "--quiet"])
    assert rc == 0 and (repo / "run" / "dvclive" / "metrics.json").is_file()
    assert not (repo / ".dvc").exists() and not (repo / "dvc.yaml").exists() and not (repo / "run" / "dvc.yaml").exists()
    status = subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True, check=True).stdout
    assert all(line.startswith("??") for line in status.splitlines()), status  # nothing staged


def test_demo_config_is_valid():
    from icmformer.training.config import load_config

    cfg = load_config(REPO / "configs" / "demo.yaml")
    assert cfg.model.name and cfg.data.kind == "folder"
