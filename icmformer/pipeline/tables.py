"""Tables 1-5 of the paper, rebuilt from evaluation summaries and complexity measurements.

Every table states the profile it came from (``demo`` numbers come from tiny models trained for
minutes on a CPU and are *not* paper numbers), puts the paper's number beside ours with the
difference, and says ``n/a`` where the paper's value could not be retrieved (see
``icmformer/reference/paper.yaml`` for the provenance of every paper number).
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from icmformer import reference

PROFILE_NOTES = {
    "demo": "Profile **demo**: tiny models trained for minutes on COCO_MVal on a 2-core CPU. "
    "These are not the paper's numbers; they show that the whole pipeline runs and how the "
    "protocol behaves. Paper columns give the published value for the paper's model.",
    "paper": "Profile **paper**: the paper's models and training schedules.",
}
NA = "n/a"


def load_summaries(eval_dir: str | Path) -> dict[str, dict[str, dict]]:
    """``results/eval/<slot>/<dataset>/summary.json`` -> ``{slot: {dataset: dataset summary}}``."""
    out: dict[str, dict[str, dict]] = {}
    for path in sorted(Path(eval_dir).glob("*/*/summary.json")):
        slot = path.parent.parent.name
        data = json.loads(path.read_text())
        for name, summary in data.get("datasets", {}).items():
            out.setdefault(slot, {})[name] = summary
    return out


def _num(value, digits: int = 2):
    if value is None:
        return NA
    return round(float(value), digits)


def _delta(ours, paper, digits: int = 2):
    if ours is None or paper is None:
        return NA
    return round(float(ours) - float(paper), digits)


def _get(summaries: Mapping, slot: str, dataset: str, key: str):
    return summaries.get(slot, {}).get(dataset, {}).get(key)


def _paper_metric(table: str, paper: Mapping | None, dataset: str, metric: str):
    if not paper:
        return None
    try:
        return reference.paper_value(table, dataset, metric, **paper)
    except KeyError:
        return None


def table_noc(summaries: Mapping, rows: Sequence[Mapping], datasets: Sequence[str]) -> pd.DataFrame:
    """Table 1: NoC@85 / NoC@90 per model and dataset, with the paper's value and the difference.

    ``rows``: ``[{slot, label, paper: {method, backbone, train} | None}, ...]``.
    """
    records = []
    for row in rows:
        for ds in datasets:
            rec = {"model": row["label"], "dataset": ds}
            for metric, key in (("noc85", "NoC@85"), ("noc90", "NoC@90")):
                ours = _get(summaries, row["slot"], ds, key)
                paper = _paper_metric("table1", row.get("paper"), ds, metric)
                rec[f"{key} ours"] = _num(ours)
                rec[f"{key} paper"] = _num(paper)
                rec[f"{key} diff"] = _delta(ours, paper)
            rec["instances"] = _get(summaries, row["slot"], ds, "instances") or NA
            records.append(rec)
    return pd.DataFrame.from_records(records)


def table_nof(summaries: Mapping, rows: Sequence[Mapping], datasets: Sequence[str]) -> pd.DataFrame:
    """Table 2: NoF@90 (and NoF@85), objects that need 20 clicks, with the paper's value."""
    records = []
    for row in rows:
        for ds in datasets:
            rec = {"model": row["label"], "dataset": ds}
            for metric, key in (("nof90", "NoF@90"), ("nof85", "NoF@85")):
                ours = _get(summaries, row["slot"], ds, key)
                paper = _paper_metric("table2", row.get("paper"), ds, metric)
                rec[f"{key} ours"] = ours if ours is not None else NA
                rec[f"{key} paper"] = _num(paper, 0)
                rec[f"{key} diff"] = _delta(ours, paper, 0)
            rec["instances"] = _get(summaries, row["slot"], ds, "instances") or NA
            records.append(rec)
    return pd.DataFrame.from_records(records)


def table_complexity(complexity: Sequence[Mapping], bench: Sequence[Mapping]) -> pd.DataFrame:
    """Table 3: params, FLOPs (ours / paper convention / paper) and seconds per click.

    ``bench``: results of ``icmformer bench`` (one per device); the SPC columns name the device.
    """
    records = []
    for c in complexity:
        h, w = c["input_size"]
        rec = {
            "model": c["model"],
            "input": f"{h}x{w}",
            "params M (ours)": round(c["params_m"], 2),
            "params M (paper conv.)": round(c["paper_params_m"], 2),
            "params M (paper)": _num(c.get("reported_params_m")),
            "GFLOPs (ours)": round(c["gflops"], 2),
            "GFLOPs (paper conv.)": round(c["paper_gflops"], 2),
            "GFLOPs (paper)": _num(c.get("reported_gflops")),
            "GFLOPs diff % (conv. vs paper)": NA
            if c.get("reported_gflops") is None
            else round(100 * (c["paper_gflops"] - c["reported_gflops"]) / c["reported_gflops"], 2),
        }
        for b in bench:
            if b["model"] != c["model"] or tuple(c["input_size"]) != (b["input_size"], b["input_size"]):
                continue
            dev = "GPU" if b["device"] == "cuda" else "CPU"
            modes = {m["mode"]: m for m in b["modes"]}
            for mode in ("naive", "optimised", "fast"):
                if mode in modes:
                    rec[f"SPC s {dev} {mode}"] = round(modes[mode]["spc_s"], 3)
            if "optimised" in modes and "naive" in modes:
                rec[f"SPC ratio {dev} optimised/naive"] = round(modes["optimised"]["ratio_to_naive"], 2)
            rec[f"{dev} device"] = b["device_name"]
        records.append(rec)
    return pd.DataFrame.from_records(records)


def table_ablation(summaries: Mapping, cells: Sequence[Mapping], datasets: Sequence[str], table: str) -> pd.DataFrame:
    """Tables 4 and 5: NoC@85/90 of ablation models on each dataset, with the paper's value.

    ``cells``: ``[{slot, label, paper_label}, ...]`` (``paper_label`` is the row label in
    ``paper.yaml``'s ``table4``/``table5``).
    """
    records = []
    for cell in cells:
        rec = {"variant": cell["label"]}
        for ds in datasets:
            for metric, key in (("noc85", "NoC@85"), ("noc90", "NoC@90")):
                ours = _get(summaries, cell["slot"], ds, key)
                try:
                    paper = reference.paper_ablation(table, cell.get("paper_label") or cell["label"], ds, metric)
                except KeyError:
                    paper = None
                rec[f"{ds} {key} ours"] = _num(ours)
                rec[f"{ds} {key} paper"] = _num(paper)
                rec[f"{ds} {key} diff"] = _delta(ours, paper)
        records.append(rec)
    return pd.DataFrame.from_records(records)


def write_table(df: pd.DataFrame, out_dir: str | Path, stem: str, title: str, profile: str, notes: Sequence[str] = ()) -> Path:
    """Write ``<stem>.csv`` and ``<stem>.md`` (title, profile note, table, notes)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / f"{stem}.csv", index=False)
    lines = [f"## {title}", "", PROFILE_NOTES.get(profile, f"Profile **{profile}**."), "", df.to_markdown(index=False)]
    if notes:
        lines.append("")
        lines.extend(f"- {n}" for n in notes)
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    return out / f"{stem}.md"
