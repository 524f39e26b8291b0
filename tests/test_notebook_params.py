"""Notebook parameters: one parser (pipeline.params), protocol defaults from evaluation.protocol,
the evaluate notebook calling the library (not the CLI), and no papermill parameter warnings."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from icmformer.evaluation.protocol import DEFAULT_PROTOCOL
from icmformer.pipeline.params import as_bool, as_list

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.py"))


def parameters(path: Path) -> dict:
    """The literal values of a notebook's ``parameters`` cell (percent format)."""
    text = path.read_text()
    cell = text.split('# %% tags=["parameters"]\n', 1)[1].split("\n# %%", 1)[0]
    return {t.id: ast.literal_eval(n.value) for n in ast.parse(cell).body if isinstance(n, ast.Assign) for t in n.targets}


def test_as_bool_and_as_list():
    for v in (True, "true", "True", " yes", "on", "1", 1):
        assert as_bool(v) is True
    for v in (False, "false", "No", "off", "0", 0):
        assert as_bool(v) is False
    assert as_bool(None) is None and as_bool("", default=True) is True
    with pytest.raises(ValueError, match="expected a boolean.*'maybe'"):
        as_bool("maybe")
    assert as_list(" GrabCut, ,DAVIS ") == ["GrabCut", "DAVIS"] and as_list("") == [] and as_list(["a", " b"]) == ["a", "b"]


def test_evaluate_notebook_defaults_are_the_protocol_defaults():
    p = parameters(ROOT / "notebooks" / "evaluate.py")
    for key in ("max_clicks", "zoom_in", "flip", "stop_at_target"):
        assert p[key] == getattr(DEFAULT_PROTOCOL, key), key


def test_notebooks_define_no_helpers_of_their_own_and_call_no_cli():
    for path in NOTEBOOKS:
        text = path.read_text()
        assert "def as_bool" not in text and "def as_list" not in text, path.name
        assert "from icmformer.cli import main" not in text, f"{path.name} drives the CLI with argv strings"


def test_papermill_reads_every_parameter(caplog):
    """papermill parses each parameters cell; a line it cannot parse (the cause of "Unable to
    parse line" / "Passed unknown parameter" warnings in dvc repro) is missing from what it sees."""
    from papermill.inspection import inspect_notebook

    for path in NOTEBOOKS:
        caplog.clear()
        seen = inspect_notebook(str(path.with_suffix(".ipynb")))
        assert "Unable to parse" not in caplog.text, f"{path.name}: {caplog.text}"
        assert set(seen) == set(parameters(path)), f"{path.name}: papermill sees {sorted(seen)}"


def test_evaluate_notebook_runs_the_library(shared_data, tmp_path):
    import icmformer
    from icmformer.models.registry import tiny_overrides

    name = "icmformer_vit_base_448"
    ckpt = icmformer.save_checkpoint(icmformer.create_model(name, **tiny_overrides(name)), tmp_path / "tiny.safetensors")
    out = tmp_path / "eval"
    cmd = [sys.executable, "-m", "papermill", str(ROOT / "notebooks" / "evaluate.ipynb"), str(tmp_path / "nb.ipynb"),
           "--log-level", "WARNING", "-p", "checkpoint", str(ckpt), "-p", "data_root", str(shared_data),
           "-p", "out_dir", str(out), "-p", "max_clicks", "2", "-p", "limit", "1", "-p", "flip", "false"]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "Passed unknown parameter" not in res.stderr and "Unable to parse" not in res.stderr
    run = json.loads((out / "run.json").read_text())
    assert run["flip"] is False and run["max_clicks"] == 2 and run["limit"] == 1
    assert json.loads((out / "summary.json").read_text())["datasets"]["GrabCut"]["instances"] == 1


def _imported_files(start: Path) -> set[Path]:
    """Every icmformer module ``start`` imports, directly or through other icmformer modules
    (imports inside functions count too: static and conservative)."""

    def module_file(mod: str) -> Path | None:
        p = ROOT / Path(*mod.split("."))
        return p / "__init__.py" if (p / "__init__.py").is_file() else (p.with_suffix(".py") if p.with_suffix(".py").is_file() else None)

    seen: set[Path] = set()
    todo = [start]
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        for n in ast.walk(ast.parse(f.read_text())):
            names = []
            if isinstance(n, ast.Import):
                names = [a.name for a in n.names]
            elif isinstance(n, ast.ImportFrom) and n.level == 0 and n.module:
                names = [n.module] + [f"{n.module}.{a.name}" for a in n.names]
            for name in names:
                parts = name.split(".")
                todo += [m for k in range(1, len(parts) + 1) if parts[0] == "icmformer" and (m := module_file(".".join(parts[:k])))]
    return seen


def test_dvc_stages_depend_on_every_module_their_notebook_runs():
    import re

    import yaml

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        stage = stage.get("do", stage)
        found = re.search(r"notebooks/(\w+)\.ipynb", stage["cmd"])
        if found is None:  # a command-line stage (e.g. the frozen demo_model training)
            continue
        notebook = found.group(1)
        deps = [str(d).rstrip("/") for d in stage["deps"]]
        assert f"notebooks/{notebook}.ipynb" in deps, name
        missing = sorted(
            rel for f in _imported_files(ROOT / "notebooks" / f"{notebook}.py")
            if (rel := f.relative_to(ROOT).as_posix()).startswith("icmformer/") and rel != "icmformer/__init__.py"
            and len(f.read_text().splitlines()) > 3  # a package's one-line docstring changes nothing
            and not any(rel == d or rel.startswith(d + "/") for d in deps)
        )  # fmt: skip
        assert not missing, f"dvc stage {name} runs {missing} but does not list them as deps"
