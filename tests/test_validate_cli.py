"""`icmformer validate`: weights compared side by side on a held-out training split."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.io import savemat

from icmformer.cli import main
from icmformer.models.checkpoint import save_checkpoint
from icmformer.models.factory import create_model, load_checkpoint
from icmformer.training.validate import paired_noc_difference, validate_model

SMALL = dict(embed_dim=32, depth=2, num_heads=2, img_size=64, neck_dims=(8, 16, 32, 64), head_channels=16, stem_channels=8)


def _sbd(root):
    rng = np.random.default_rng(0)
    (root / "img").mkdir(parents=True)
    (root / "inst").mkdir()
    names = []
    for i in range(2):
        name = f"im{i}"
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(root / "img" / f"{name}.jpg")
        seg = np.zeros((48, 64), np.uint8)
        seg[5:25, 8:30] = 1
        seg[30:44, 35 + i : 60] = 2
        savemat(root / "inst" / f"{name}.mat", {"GTinst": {"Segmentation": seg}})
        names.append(name)
    (root / "val.txt").write_text("\n".join(names) + "\n")
    return root


def _weights(tmp_path, seed):
    torch.manual_seed(seed)
    path = tmp_path / f"w{seed}.safetensors"
    save_checkpoint(create_model("icmformer_vit_demo_224", **SMALL), path)
    return path


def test_validate_rows_match_the_trainers_validation_for_each_file(tmp_path, capsys):
    root = _sbd(tmp_path / "bsds")
    w0, w1 = _weights(tmp_path, 0), _weights(tmp_path, 1)
    out = tmp_path / "val.jsonl"
    rc = main(["validate", "--checkpoint", str(w0), "--checkpoint", str(w1), "--data-root", str(root),
               "--max-instances", "0", "--max-clicks", "3", "--out", str(out)])  # fmt: skip
    printed = capsys.readouterr().out
    assert rc == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["weights"] for r in rows] == [str(w0), str(w1)]
    assert all(r["instances"] == 4 and r["input"] == 64 and len(r["miou"]) == 3 for r in rows)
    assert str(w0) in printed and str(w1) in printed and "NoC@90" in printed
    # each instance's NoC is kept, and the second file is compared with the first instance by instance
    for r in rows:
        assert len(r["noc90_each"]) == 4 and np.mean(r["noc90_each"]) == pytest.approx(r["noc90"])
        assert np.mean(r["noc85_each"]) == pytest.approx(r["noc85"])
    assert "vs_first" not in rows[0]
    paired = rows[1]["vs_first"]["noc90"]
    assert paired == paired_noc_difference(rows[0]["noc90_each"], rows[1]["noc90_each"])
    assert paired["mean"] == pytest.approx(rows[1]["noc90"] - rows[0]["noc90"])
    assert "vs the first: NoC@85" in printed and f"{paired['mean']:+.2f}" in printed
    # the CLI runs 8 instances per forward pass by default, the trainer's validation 1 (batch_size=1):
    # the same IoUs, instance by instance, as at any other batch size
    keys = ("noc85", "noc90", "nof90", "miou", "noc85_each", "noc90_each")
    for path, row in zip((w0, w1), rows):
        direct = validate_model(load_checkpoint(path).eval(), "sbd", str(root), split="val", max_instances=10, max_clicks=3,
                                per_instance=True)  # fmt: skip
        assert {k: row[k] for k in keys} == {k: direct[k] for k in keys}
        batched = validate_model(load_checkpoint(path).eval(), "sbd", str(root), split="val", max_instances=10, max_clicks=3,
                                 per_instance=True, batch_size=3)  # fmt: skip
        assert {k: batched[k] for k in keys} == {k: direct[k] for k in keys}
    # --max-instances picks evenly spaced instances
    rc = main(["validate", "--checkpoint", str(w0), "--data-root", str(root), "--max-instances", "2",
               "--max-clicks", "1", "--out", str(out), "--quiet"])  # fmt: skip
    assert rc == 0 and json.loads(out.read_text().splitlines()[-1])["instances"] == 2 and capsys.readouterr().out == ""


@pytest.mark.parametrize(
    "extra, message",
    [
        ([], "nothing to validate"),
        (["--pretrained"], "--pretrained needs --model"),
        (["--checkpoint", "missing.safetensors"], "checkpoint not found: missing.safetensors"),
        (["--checkpoint", "W", "--max-instances", "-1"], "--max-instances must be >= 0"),
        (["--checkpoint", "W", "--batch-size", "0"], "--batch-size must be >= 1"),
        (["--checkpoint", "W", "--data-root", "nowhere"], "--data-root nowhere not found"),
        (["--checkpoint", "W", "--out", "rows.csv"], "unknown file type"),
    ],
)
def test_validate_bad_input_is_one_line(tmp_path, capsys, extra, message, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _sbd(tmp_path / "data" / "BSDS_train")
    w = _weights(tmp_path, 0)
    extra = [str(w) if a == "W" else a for a in extra]
    assert main(["validate", *extra]) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_paired_noc_difference_measures_the_gap_and_its_noise():
    ref = np.array([3, 5, 20, 7, 2, 9, 11, 4], float)
    same = paired_noc_difference(ref, ref)
    assert same == {"mean": 0.0, "lo": 0.0, "hi": 0.0, "fewer": 0, "more": 0}
    shifted = paired_noc_difference(ref, ref - 1)  # one click fewer on every instance: no noise at all
    assert shifted["mean"] == pytest.approx(-1) and shifted["lo"] == pytest.approx(-1) and shifted["hi"] == pytest.approx(-1)
    assert (shifted["fewer"], shifted["more"]) == (8, 0)
    mixed = ref + np.array([-4, 3, 0, -2, 5, -1, 0, 1])  # better on some, worse on others
    p = paired_noc_difference(ref, mixed)
    assert p["mean"] == pytest.approx(0.25) and p["lo"] < 0 < p["hi"] and (p["fewer"], p["more"]) == (3, 3)
    assert p == paired_noc_difference(ref, mixed)  # seeded: the same interval every time
    tiled = paired_noc_difference(np.tile(ref, 10), np.tile(mixed, 10))  # the same gap on 10x the instances
    assert tiled["mean"] == pytest.approx(0.25) and tiled["hi"] - tiled["lo"] < 0.5 * (p["hi"] - p["lo"])
    with pytest.raises(ValueError, match="equal-length"):
        paired_noc_difference(ref, ref[:3])
    with pytest.raises(ValueError, match="non-empty"):
        paired_noc_difference([], [])
