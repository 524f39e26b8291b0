"""tools/gpu_check.py: the GPU first-run check, exercised on CPU with a tiny model."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tools" / "gpu_check.py"


def test_without_a_gpu_it_says_so_in_one_line(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    out = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path)], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 1 and "no CUDA device" in out.stderr and len(out.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_the_three_measurements_on_cpu_with_a_tiny_model(tmp_path, shared_data):
    cmd = [sys.executable, str(SCRIPT), "--device", "cpu", "--data-root", str(shared_data), "--out", str(tmp_path),
           "--train-seconds", "1", "--warmup-steps", "1", "--batch-size", "2", "--num-workers", "0",
           "--override", "model.name=icmformer_vit_tiny_224", "--override", "model.pretrained_backbone=null",
           "--override", "data.augment.crop_size=[224,224]", "--override", "data.epoch_len=8",
           "--bench-model", "icmformer_vit_tiny_224", "--bench-clicks", "2", "--eval-limit", "1", "--max-clicks", "2"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["train"]["steps"] >= 1 and report["train"]["images_per_s"] > 0 and report["train"]["bf16"] is True
    assert report["spc"]["naive"] > 0 and report["spc"]["optimised"] > 0
    assert report["grabcut_eval"]["instances"] >= 1 and report["grabcut_eval"]["wall_s"] > 0
    for word in ("img/s", "seconds per click", "GrabCut eval"):
        assert word in out.stdout
