"""Bad user input on the command line: one line on stderr, exit 1, never a traceback (issue 14).

``--debug`` shows the traceback. Output paths are checked before the expensive work.
"""
from __future__ import annotations

import errno
import os
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from icmformer.cli import main
from icmformer.models.checkpoint import save_checkpoint
from icmformer.models.registry import create_model, tiny_overrides

sys.path.insert(0, str(Path(__file__).parent))
from test_eval_loop import make_folder  # noqa: E402
from test_train_cli import config_file  # noqa: E402,F401 (the tiny training config fixture)

NAME = "icmformer_vit_tiny_224"


def one_line_error(capsys, rc, *needles):
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("warning:") and "UNTRAINED" not in ln]
    assert rc == 1, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "weights_only=False" not in err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    d = tmp_path_factory.mktemp("good")
    torch.manual_seed(0)
    save_checkpoint(create_model(NAME, **tiny_overrides(NAME)), d / "tiny.safetensors")
    Image.fromarray(np.full((40, 50, 3), 90, np.uint8)).save(d / "img.png")
    return d


@pytest.fixture
def readonly_dir(tmp_path):
    """A folder where nothing can be created (root ignores file modes: /sys refuses new files)."""
    if os.geteuid() == 0:
        if not os.path.isdir("/sys"):
            pytest.skip("no read-only location for root")
        yield Path("/sys/icmformer-readonly-test")
        return
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o500)
    yield d / "sub"
    d.chmod(0o700)


def _safetensors_variants(good, tmp_path) -> dict[str, Path]:
    data = (good / "tiny.safetensors").read_bytes()
    (hlen,) = struct.unpack("<Q", data[:8])
    out = {
        "truncated": data[: 8 + hlen // 2],
        "invalid header length": struct.pack("<Q", 3) + data[8:],
        "header too large": struct.pack("<Q", 1 << 40) + data[8:],
        "truncated tensors": data[: 8 + hlen + 100],
    }
    paths = {}
    for k, v in out.items():
        p = tmp_path / f"{k.replace(' ', '_')}.safetensors"
        p.write_bytes(v)
        paths[k] = p
    return paths


def _with_metadata(good, tmp_path, **meta) -> Path:
    from safetensors.torch import load_file, save_file

    from icmformer.models.checkpoint import read_metadata

    src = good / "tiny.safetensors"
    merged = {**read_metadata(src), **meta}
    path = tmp_path / "meta.safetensors"
    save_file(load_file(str(src)), str(path), metadata=merged)
    return path


def test_corrupt_safetensors_is_one_line_everywhere(good, tmp_path, capsys):
    for kind, ckpt in _safetensors_variants(good, tmp_path).items():
        commands = {
            "predict": ["predict", "--checkpoint", ckpt, "--image", good / "img.png", "--click", "5,5,+", "--out", tmp_path / "m.png"],
            "convert-official": ["convert-official", ckpt, tmp_path / "c.safetensors"],
            "bench": ["bench", "--checkpoint", ckpt, "--modes", "naive", "--clicks", "1", "--repeats", "1", "--quiet"],
            "evaluate": ["evaluate", "--checkpoint", ckpt, "--datasets", "folder", "--data-root", make_folder(tmp_path / f"d{kind[:3]}{len(kind)}"),
                         "--limit", "1", "--max-clicks", "1", "--quiet", "--out", tmp_path / "ev"],
        }  # fmt: skip
        for name, argv in commands.items():
            rc = main([str(a) for a in argv])
            one_line_error(capsys, rc, str(ckpt.name))


def test_checkpoint_metadata_errors(good, tmp_path, capsys):
    cases = [
        (dict(overrides="[1, 2]"), "'overrides' must be a JSON object"),
        (dict(overrides="{bad json"), "'overrides' is not valid JSON"),
        (dict(format_version="99"), "format_version '99' is newer"),
    ]
    for meta, needle in cases:
        path = _with_metadata(good, tmp_path, **meta)
        rc = main(["predict", "--checkpoint", str(path), "--image", str(good / "img.png"), "--click", "5,5,+", "--out", str(tmp_path / "m.png")])
        one_line_error(capsys, rc, needle, "meta.safetensors")


def test_read_only_outputs_fail_before_the_work(good, tmp_path, capsys, readonly_dir, monkeypatch):
    import icmformer.interactive.io as io_mod

    def no_model(*a, **k):  # the output check must come first
        raise AssertionError("model loaded before the output path was checked")

    monkeypatch.setattr(io_mod, "load_model", no_model)
    rc = main(["predict", "--model", NAME, "--image", str(good / "img.png"), "--click", "5,5,+", "--out", str(readonly_dir / "m.png")])
    one_line_error(capsys, rc, "permission denied")
    rc = main(["predict", "--model", NAME, "--image", str(good / "img.png"), "--click", "5,5,+", "--out", str(tmp_path / "m.xyz")])
    one_line_error(capsys, rc, "unknown file type '.xyz'")
    rc = main(["predict", "--model", NAME, "--image", str(good / "img.png"), "--click", "5,5,+", "--out", str(tmp_path / "m.png"),
               "--prob-out", str(tmp_path / "p.jpg")])  # fmt: skip
    one_line_error(capsys, rc, "--prob-out")
    rc = main(["bench", "--model", NAME, "--modes", "naive", "--clicks", "1", "--repeats", "1", "--quiet", "--out", str(readonly_dir / "b.json")])
    one_line_error(capsys, rc, "permission denied")
    rc = main(["convert-official", str(good / "tiny.safetensors"), str(readonly_dir / "c.safetensors")])
    one_line_error(capsys, rc, "permission denied")
    rc = main(["evaluate", "--method", "grabcut", "--datasets", "folder", "--data-root", str(make_folder(tmp_path / "d")),
               "--limit", "1", "--max-clicks", "1", "--quiet", "--out", str(readonly_dir / "ev")])  # fmt: skip
    one_line_error(capsys, rc, "permission denied")


def test_disk_full_during_evaluate(tmp_path, capsys, monkeypatch):
    import icmformer.evaluation.runner as runner

    def full(fout, rec):
        raise OSError(errno.ENOSPC, "No space left on device", fout.name)

    monkeypatch.setattr(runner, "_write", full)
    rc = main(["evaluate", "--method", "grabcut", "--datasets", "folder", "--data-root", str(make_folder(tmp_path / "d")),
               "--limit", "1", "--max-clicks", "1", "--quiet", "--out", str(tmp_path / "ev")])  # fmt: skip
    one_line_error(capsys, rc, "no space left", "records.jsonl")


def test_flops_bad_values(capsys):
    one_line_error(capsys, main(["flops", "--model", NAME, "--set", "embed_dim=abc"]), "embed_dim", "expected int")
    one_line_error(capsys, main(["flops", "--model", NAME, "--size", "0", "0"]), "--size", "positive")


def test_bench_missing_data_root(capsys, tmp_path):
    rc = main(["bench", "--model", NAME, "--modes", "naive", "--clicks", "1", "--repeats", "1", "--quiet", "--data-root", "/nonexistent"])
    one_line_error(capsys, rc, "/nonexistent", "GrabCut")


def test_debug_shows_the_traceback(capsys):
    with pytest.raises(ValueError, match="positive"):
        main(["--debug", "flops", "--model", NAME, "--size", "0", "0"])
    with pytest.raises(ValueError, match="positive"):
        main(["flops", "--model", NAME, "--size", "0", "0", "--debug"])


# ------------------------------------------------------------------------------ training
def test_train_resume_without_state_fails(config_file, tmp_path, capsys):
    rc = main(["train", "--config", str(config_file), "max_steps=1", "--output-dir", str(tmp_path / "o"), "--resume", "--quiet"])
    one_line_error(capsys, rc, "--resume: no training state", "last.pt")


def test_train_negative_weight_decay_names_the_key(config_file, tmp_path, capsys):
    rc = main(["train", "--config", str(config_file), "optim.weight_decay=-1", "--output-dir", str(tmp_path / "o"), "--quiet"])
    one_line_error(capsys, rc, "optim.weight_decay", ">= 0")


def test_train_read_only_output_dir(config_file, capsys, readonly_dir):
    rc = main(["train", "--config", str(config_file), "max_steps=1", "--output-dir", str(readonly_dir / "run"), "--quiet"])
    one_line_error(capsys, rc, "permission denied")


def test_train_disk_full_stale_tmp_and_corrupt_state(config_file, tmp_path, capsys, monkeypatch):
    import icmformer.filesafety as fs

    out = tmp_path / "run"
    ckpt_dir = out / "checkpoints"
    ckpt_dir.mkdir(parents=True)
    dead = 2**22 + 12345  # above the default pid_max: no such process
    stale = ckpt_dir / f".last.pt.tmp{dead}"
    stale.write_bytes(b"half a checkpoint")
    real_save = torch.save

    def full_disk_save(obj, f, *a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 470")

    monkeypatch.setattr(torch, "save", full_disk_save)
    monkeypatch.setattr(fs.shutil, "disk_usage", lambda p: type("U", (), {"free": 0})())
    rc = main(["train", "--config", str(config_file), "max_steps=1", "--output-dir", str(out), "--quiet"])
    one_line_error(capsys, rc, "no space left", "last.pt")
    assert not stale.exists()  # cleaned when the run started
    assert not list(ckpt_dir.glob(".last.pt.tmp*"))
    monkeypatch.setattr(torch, "save", real_save)
    monkeypatch.undo()
    stale.write_bytes(b"x")
    assert main(["train", "--config", str(config_file), "max_steps=1", "--output-dir", str(out), "--quiet"]) == 0
    assert not stale.exists()
    capsys.readouterr()
    state = ckpt_dir / "last.pt"
    state.write_bytes(state.read_bytes()[:200])  # corrupt
    rc = main(["train", "--config", str(config_file), "max_steps=2", "--output-dir", str(out), "--resume", "--quiet"])
    one_line_error(capsys, rc, "cannot read training state", "last.pt")
