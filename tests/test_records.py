"""Resumed evaluations cannot mix models, protocols, duplicated records or two writers (issue 14)."""
from __future__ import annotations

import json
import subprocess
import sys
import warnings

import pytest
import torch

from icmformer.data.datasets import FolderDataset
from icmformer.evaluation.records import FINGERPRINT, FolderLock, RecordsWarning, weights_fingerprint
from icmformer.evaluation.runner import RECORDS, SUMMARY, read_records, run_evaluation

from test_eval_loop import CountingFactory, make_folder


def _run(data, out, **kw):
    kw.setdefault("max_clicks", 3)
    return run_evaluation([FolderDataset(path=data, name="toy")], None, CountingFactory(), out, progress=False, **kw)


def test_duplicated_record_is_counted_once_with_a_warning(tmp_path):
    data = make_folder(tmp_path / "data")
    out = tmp_path / "out"
    first = _run(data, out)
    n = first["datasets"]["toy"]["instances"]
    lines = (out / RECORDS).read_text().splitlines(keepends=True)
    (out / RECORDS).write_text("".join(lines) + lines[0])  # the first record appended again
    with pytest.warns(RecordsWarning, match="1 duplicated record"):
        again = _run(data, out)
    assert again["datasets"]["toy"]["instances"] == n == len(lines)
    assert json.loads((out / SUMMARY).read_text())["n_records"] == n


def test_resume_refuses_other_weights_or_protocol(tmp_path):
    data = make_folder(tmp_path / "data")
    out = tmp_path / "out"
    _run(data, out, config={"method": "model", "weights_sha256": "a" * 64}, limit=1)
    assert json.loads((out / FINGERPRINT).read_text())["weights"] == "a" * 64
    with pytest.raises(ValueError, match="weights|another configuration"):
        _run(data, out, config={"method": "model", "weights_sha256": "b" * 64})
    # run.json edited or lost: the fingerprint still tells the runs apart
    (out / "run.json").unlink()
    with pytest.raises(ValueError, match="records of other model weights"):
        _run(data, out, config={"method": "model", "weights_sha256": "b" * 64})
    assert not (out / "run.json").exists()  # the refused run did not leave its run.json behind
    with pytest.raises(ValueError, match="records of other protocol"):
        _run(data, out, config={"method": "model", "weights_sha256": "a" * 64}, max_clicks=4)
    # same weights and protocol: resumes (more images), records not duplicated
    s = _run(data, out, config={"method": "model", "weights_sha256": "a" * 64})
    assert s["datasets"]["toy"]["instances"] == len(read_records(out / RECORDS))
    # --no-resume starts over with the new fingerprint
    _run(data, out, config={"method": "model", "weights_sha256": "b" * 64}, resume=False)


def test_records_without_fingerprint_are_not_resumed(tmp_path):
    data = make_folder(tmp_path / "data")
    out = tmp_path / "out"
    _run(data, out)
    (out / FINGERPRINT).unlink()
    with pytest.raises(ValueError, match=f"no {FINGERPRINT}"):
        _run(data, out)


def test_two_evaluations_cannot_share_a_folder(tmp_path):
    data = make_folder(tmp_path / "data")
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from icmformer.evaluation.records import FolderLock; "
         "l = FolderLock(sys.argv[1]); print('locked', flush=True); time.sleep(60)", str(out)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ValueError, match=f"in use by another evaluation \\(pid {holder.pid}"):
            _run(data, out)
    finally:
        holder.kill()
        holder.wait()
    _run(data, out)  # the lock dies with its process: no stale lock
    with FolderLock(out):  # and the run released its own
        pass


def test_failed_start_releases_the_lock(tmp_path):
    data = make_folder(tmp_path / "data")
    out = tmp_path / "out"
    _run(data, out)
    with pytest.raises(ValueError):
        _run(data, out, max_clicks=5)  # another protocol: refused
    _run(data, out)  # the refused attempt did not keep the folder locked


def test_weights_fingerprint_tells_models_apart():
    from icmformer.models.registry import create_model

    torch.manual_seed(0)
    a = create_model("icmformer_vit_tiny_224")
    torch.manual_seed(0)
    b = create_model("icmformer_vit_tiny_224")
    assert weights_fingerprint(a) == weights_fingerprint(b)
    with torch.no_grad():
        next(b.parameters()).view(-1)[0] += 1e-3
    assert weights_fingerprint(a) != weights_fingerprint(b)


def test_evaluate_cli_untrained_model_is_seeded_and_fingerprinted(tmp_path, capsys):
    from icmformer.cli import main

    data = make_folder(tmp_path / "data")
    def args(limit):
        return ["evaluate", "--model", "icmformer_vit_tiny_224", "--datasets", "folder", "--data-root", str(data),
                "--max-clicks", "1", "--limit", str(limit), "--quiet", "--out", str(tmp_path / "out")]  # fmt: skip

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(args(1)) == 0
        fp1 = json.loads((tmp_path / "out" / FINGERPRINT).read_text())
        assert fp1["weights"] and len(fp1["weights"]) == 64
        torch.manual_seed(12345)  # the global RNG state must not matter: the untrained model is seeded
        assert main(args(2)) == 0, capsys.readouterr().err  # resumes into the same folder
    assert json.loads((tmp_path / "out" / FINGERPRINT).read_text()) == fp1
