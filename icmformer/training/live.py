"""DVCLive for training metrics, without git or DVC side effects, and trimmed on resume."""
from __future__ import annotations

import os
from pathlib import Path

from icmformer.utils import atomic_write_text


def make_live(live_dir: str | Path, resume: bool = False):
    """A ``dvclive.Live`` logging to ``live_dir`` with no git or DVC side effects.

    ``save_dvc_exp=False`` and ``dvcyaml=None`` keep it from saving experiments or writing
    ``dvc.yaml``; in addition, DVCLive 3.49 looks up the DVC repository at start-up and, when
    there is none, runs ``dvc init`` in the enclosing git repository (creating ``.dvc/`` and
    staging it in git). The subclass skips that lookup: inside a DVC pipeline stage (``DVC_ROOT``
    set) it only records that it runs inside one, as DVCLive does; metrics files are written the
    same way in both cases.
    """
    from dvclive import Live

    class _Live(Live):
        def _init_dvc(self) -> None:  # noqa: D401 - see make_live
            if os.getenv("DVC_ROOT"):
                self._inside_dvc_pipeline = True
                self._inside_dvc_exp = bool(os.getenv("DVC_EXP_BASELINE_REV"))
            self._save_dvc_exp = False
            self._dvc_repo = None
            self._dvc_file = "dvc.yaml"  # never written (dvcyaml=None)

    return _Live(dir=str(live_dir), resume=resume, save_dvc_exp=False, dvcyaml=None, report=None)


def truncate_dvclive(live_dir: Path, step: int) -> None:
    """Drop metric rows logged after ``step`` (a run that went on past its last checkpoint)."""
    metrics = live_dir / "plots" / "metrics"
    if not metrics.is_dir():
        return
    for tsv in metrics.rglob("*.tsv"):
        lines = tsv.read_text().splitlines()
        if not lines:
            continue
        header = lines[0].split("\t")
        if "step" not in header:
            continue
        col = header.index("step")
        keep = [lines[0]] + [ln for ln in lines[1:] if ln.split("\t")[col].isdigit() and int(ln.split("\t")[col]) <= step]
        if len(keep) != len(lines):
            atomic_write_text(tsv, "\n".join(keep) + "\n")
