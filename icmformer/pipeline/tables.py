"""Tables 1-5 of the paper, rebuilt from evaluation summaries and complexity measurements.

Every table states the profile it came from (``demo`` numbers come from tiny models trained for
minutes on a CPU and are *not* paper numbers) and puts the paper's number beside ours with the
difference. Cell markers: ``n/a`` = the paper has no row for this model, ``-`` = the paper prints
the row but leaves the cell empty (or no difference can be taken), ``not run`` = this profile did
not evaluate the model on that dataset. Every paper number comes from
``icmformer/reference/paper.yaml`` (with its provenance); Tables 1-3 also print the paper's own rows.
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
    "paper-smoke": "Profile **paper-smoke**: the paper's models, configs and weight-file layouts, trained for a "
    "few steps on BSDS_train (read as SBD) from random stand-in backbone weights, evaluated with 2 clicks "
    "on a few GrabCut images. It proves the paper pipeline runs end to end; the numbers mean nothing.",
}
NA = "n/a"          # no paper row for this model (or not retrieved)
EMPTY = "-"         # the paper prints this row but leaves the cell empty; or no difference to take
NOT_RUN = "not run"  # we did not evaluate this model on this dataset in this profile
DATASET_ORDER = ("GrabCut", "Berkeley", "SBD", "DAVIS", "PascalVOC", "COCO_MVal")
#: our registry names -> the paper's (method, backbone) in Table 3
PAPER_MODELS = {
    "icmformer_vit_base_448": ("iCMFormer", "ViT-B"),
    "icmformer_swin_base_384": ("iCMFormer", "Swin-B"),
    "icmformer_swin_small_224": ("iCMFormer", "Swin-S"),
}


def load_summaries(eval_dir: str | Path) -> dict[str, dict[str, dict]]:
    """``results/eval/<slot>/<dataset>/summary.json`` -> ``{slot: {dataset: dataset summary}}``."""
    out: dict[str, dict[str, dict]] = {}
    for path in sorted(Path(eval_dir).glob("*/*/summary.json")):
        slot = path.parent.parent.name
        data = json.loads(path.read_text())
        for name, summary in data.get("datasets", {}).items():
            out.setdefault(slot, {})[name] = summary
    return out


def load_model_summaries(model_dir: str | Path) -> dict[str, dict]:
    """``<model_dir>/<dataset>/summary.json`` (one model's evaluations) -> ``{dataset: summary}``."""
    out: dict[str, dict] = {}
    for path in sorted(Path(model_dir).glob("*/summary.json")):
        out.update(json.loads(path.read_text()).get("datasets", {}))
    return out


def add_extra_rows(summaries: Mapping, rows: Sequence[Mapping], extra: Sequence[Mapping] | None) -> tuple[dict, list[dict]]:
    """Append model rows given by an evaluation folder (``tables.table1.extra_rows`` in params).

    ``extra``: ``[{label, eval_dir, paper: {method, backbone, train} | None}, ...]``; ``eval_dir``
    holds ``<dataset>/summary.json``. Returns new ``(summaries, rows)``; the extra rows get the
    slot ``extra:<label>``. A folder without any summary raises ``FileNotFoundError``.
    """
    summaries = dict(summaries)
    rows = [dict(r) for r in rows]
    for item in extra or []:
        missing = [k for k in ("label", "eval_dir") if not item.get(k)]
        if missing:
            raise ValueError(f"tables.table1.extra_rows entry {dict(item)} lacks {', '.join(missing)}")
        found = load_model_summaries(item["eval_dir"])
        if not found:
            raise FileNotFoundError(f"extra row {item['label']!r}: no <dataset>/summary.json under {item['eval_dir']}")
        slot = f"extra:{item['label']}"
        summaries[slot] = found
        rows.append({"slot": slot, "label": item["label"], "paper": item.get("paper"), "eval_dir": str(item["eval_dir"])})
    return summaries, rows


def _num(value, digits: int = 2):
    if value is None:
        return NA
    return round(float(value), digits)


def _delta(ours, paper, digits: int = 2):
    if ours is None or not isinstance(paper, (int, float)):
        return EMPTY
    d = round(float(ours) - float(paper), digits)
    return int(d) if digits == 0 else d


def _get(summaries: Mapping, slot: str | None, dataset: str, key: str):
    if not slot:
        return None
    return summaries.get(slot, {}).get(dataset, {}).get(key)


def _ours(value, digits: int | None = 2):
    if value is None:
        return NOT_RUN
    return value if digits is None else round(float(value), digits)


def _paper_cell(table: str, paper: Mapping | None, dataset: str, metric: str, digits: int = 2):
    """The paper's value for a row given by ``paper`` criteria: a number, ``-`` (cell left empty
    by the paper) or ``n/a`` (no such paper row, or the paper's table has no such column)."""
    if not paper:
        return NA
    try:
        reference.paper_row(table, **paper)
    except KeyError:
        return NA
    try:
        value = reference.paper_value(table, dataset, metric, **paper)
    except KeyError:  # the paper's table has no such dataset column or metric
        return EMPTY
    return EMPTY if value is None else round(float(value), digits)


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
                paper = _paper_cell("table1", row.get("paper"), ds, metric)
                rec[f"{key} ours"] = _ours(ours)
                rec[f"{key} paper"] = paper
                rec[f"{key} diff"] = _delta(ours, paper)
            rec["instances"] = _get(summaries, row["slot"], ds, "instances") or NOT_RUN
            records.append(rec)
    return pd.DataFrame.from_records(records)


def _select_paper_rows(table: str, select: Sequence[Mapping] | None) -> list[dict]:
    """Rows of the paper's ``table`` matching any of the ``select`` criteria (all rows if None)."""
    if select is None:
        rows = reference.paper_rows(table)
    else:
        labels = {r["label"] for crit in select for r in reference.paper_rows_where(table, **crit)}
        rows = [r for r in reference.paper_rows(table) if r["label"] in labels]
    return [r for r in rows if r["status"] == "paper"]


def paper_table(table: str, select: Sequence[Mapping] | None = None, datasets: Sequence[str] | None = None) -> pd.DataFrame:
    """The paper's own rows of Table 1, 2, 4 or 5 (``status: paper``), wide, for context.

    ``select``: criteria such as ``[{method: iCMFormer}, {method: RITM}]`` (None = every row);
    ``datasets``: the columns (default: the paper table's). ``-`` = the paper leaves the cell empty.
    """
    spec = reference.load_paper_numbers()[table]
    datasets = list(datasets or spec["datasets"])
    names = {"noc85": "NoC@85", "noc90": "NoC@90", "nof90": "NoF@90"}
    records = []
    for r in _select_paper_rows(table, select):
        rec = {"paper row": r["label"]}
        if "train" in r and table != "table1":
            rec["train"] = r["train"]
        for ds in datasets:
            for m in spec["metrics"]:
                v = (r["values"].get(ds) or {}).get(m)
                rec[f"{ds} {names[m]}"] = EMPTY if v is None else (int(v) if m.startswith("nof") else v)
        records.append(rec)
    return pd.DataFrame.from_records(records)


def table_nof(summaries: Mapping, rows: Sequence[Mapping], datasets: Sequence[str]) -> pd.DataFrame:
    """Table 2: NoF@90 (the paper's metric) with the paper's value, and our NoF@85."""
    records = []
    for row in rows:
        for ds in datasets:
            rec = {"model": row["label"], "dataset": ds}
            ours = _get(summaries, row["slot"], ds, "NoF@90")
            paper = _paper_cell("table2", row.get("paper"), ds, "nof90", 0)
            rec["NoF@90 ours"] = _ours(ours, None)
            rec["NoF@90 paper"] = int(paper) if isinstance(paper, float) else paper
            rec["NoF@90 diff"] = _delta(ours, paper, 0)
            rec["NoF@85 ours"] = _ours(_get(summaries, row["slot"], ds, "NoF@85"), None)
            rec["instances"] = _get(summaries, row["slot"], ds, "instances") or NOT_RUN
            records.append(rec)
    return pd.DataFrame.from_records(records)


def _paper_complexity(model: str, quantity: str):
    method_backbone = PAPER_MODELS.get(model)
    if method_backbone is None:
        return None
    try:
        return reference.paper_complexity(*method_backbone, quantity)
    except KeyError:
        return None


def table_complexity(complexity: Sequence[Mapping], bench: Sequence[Mapping]) -> pd.DataFrame:
    """Table 3: params, FLOPs (ours / paper convention / paper) and seconds per click.

    ``bench``: results of ``icmformer bench`` (one per device); the SPC columns name the device.
    The paper's SPC was measured on its GPU (an NVIDIA A40): a different machine from ours.
    """
    records = []
    for c in complexity:
        h, w = c["input_size"]
        paper_params = _paper_complexity(c["model"], "params_m")
        paper_flops = _paper_complexity(c["model"], "flops_g")
        if paper_params is None:
            paper_params, paper_flops = c.get("reported_params_m"), c.get("reported_gflops")
        rec = {
            "model": c["model"],
            "input": f"{h}x{w}",
            "params M (ours)": round(c["params_m"], 2),
            "params M (paper conv.)": round(c["paper_params_m"], 2),
            "params M (paper)": _num(paper_params),
            "GFLOPs (ours)": round(c["gflops"], 2),
            "GFLOPs (paper conv.)": round(c["paper_gflops"], 2),
            "GFLOPs (paper)": _num(paper_flops),
            "GFLOPs diff % (conv. vs paper)": NA
            if paper_flops is None
            else round(100 * (c["paper_gflops"] - paper_flops) / paper_flops, 2),
        }
        for b in bench:
            if b["model"] != c["model"] or tuple(c["input_size"]) != (b["input_size"], b["input_size"]):
                continue
            dev = "GPU" if b["device"] == "cuda" else "CPU"
            modes = {m["mode"]: m for m in b["modes"]}
            for mode in modes:  # as measured: naive, optimised, fast (int8), bf16, onnx
                rec[f"SPC s {dev} {mode}"] = round(modes[mode]["spc_s"], 3)
            if "naive" in modes:
                for mode in modes:
                    if mode != "naive" and modes[mode].get("ratio_to_naive") is not None:
                        rec[f"SPC ratio {dev} {mode}/naive"] = round(modes[mode]["ratio_to_naive"], 2)
            rec[f"{dev} device"] = b["device_name"]
        spc = _paper_complexity(c["model"], "spc")
        rec["SPC s paper (A40 GPU)"] = NA if spc is None else round(spc / 1000.0, 3)
        records.append(rec)
    df = pd.DataFrame.from_records(records)
    ours_spc = [c for c in df.columns if c.startswith("SPC") and "paper" not in c or c.endswith(" device")]
    df[ours_spc] = df[ours_spc].astype(object).where(df[ours_spc].notna(), NOT_RUN)
    return df


def paper_table3() -> pd.DataFrame:
    """The paper's Table 3 as printed (all rows, SPC in ms on its NVIDIA A40 GPU)."""
    records = []
    for r in _select_paper_rows("table3", None):
        v = r["values"]
        records.append({"paper row": r["label"], "params M": v.get("params_m"), "GFLOPs": v.get("flops_g"),
                        "SPC ms (A40 GPU)": EMPTY if v.get("spc") is None else v["spc"]})  # fmt: skip
    return pd.DataFrame.from_records(records)


def ablation_datasets(table: str, ours: Sequence[str]) -> list[str]:
    """Our datasets and the paper table's, in the usual order (the paper's values are always shown)."""
    paper = reference.load_paper_numbers()[table].get("datasets") or []
    wanted = set(ours) | set(paper)
    return [d for d in DATASET_ORDER if d in wanted] + sorted(wanted - set(DATASET_ORDER))


def table_ablation(summaries: Mapping, cells: Sequence[Mapping], datasets: Sequence[str], table: str) -> pd.DataFrame:
    """Tables 4 and 5: one row per variant and dataset; NoC@90 with the paper's value, and NoC@85.

    ``cells``: ``[{slot, label, paper_label}, ...]`` (``paper_label`` is the row label in
    ``paper.yaml``'s ``table4``/``table5``; ``slot: null`` = a variant this profile does not
    train, shown with the paper's value only). ``datasets``: ours; the paper table's datasets
    are added (:func:`ablation_datasets`).
    """
    records = []
    for cell in cells:
        for ds in ablation_datasets(table, datasets):
            ours90 = _get(summaries, cell.get("slot"), ds, "NoC@90")
            label = cell.get("paper_label") or cell["label"]
            try:
                paper = reference.paper_ablation(table, label, ds, "noc90")
                paper = EMPTY if paper is None else round(paper, 2)
            except KeyError as e:  # no such paper row: n/a; a dataset the paper's table lacks: -
                paper = EMPTY if "unknown dataset" in str(e) else NA
            records.append({
                "variant": cell["label"], "dataset": ds,
                "NoC@85 ours": _ours(_get(summaries, cell.get("slot"), ds, "NoC@85")),
                "NoC@90 ours": _ours(ours90), "NoC@90 paper": paper, "NoC@90 diff": _delta(ours90, paper),
            })  # fmt: skip
    return pd.DataFrame.from_records(records)


def write_table(df: pd.DataFrame, out_dir: str | Path, stem: str, title: str, profile: str, notes: Sequence[str] = (),
                sections: Sequence[tuple[str, pd.DataFrame, str]] = ()) -> Path:  # fmt: skip
    """Write ``<stem>.csv`` and ``<stem>.md`` (title, profile note, table, notes).

    ``sections``: further ``(heading, frame, csv_stem)`` tables (e.g. the paper's own rows), written
    below the notes and to ``<csv_stem>.csv``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / f"{stem}.csv", index=False)
    lines = [f"## {title}", "", PROFILE_NOTES.get(profile, f"Profile **{profile}**."), "", df.to_markdown(index=False)]
    if notes:
        lines.append("")
        lines.extend(f"- {n}" for n in notes)
    for heading, frame, csv_stem in sections:
        frame.to_csv(out / f"{csv_stem}.csv", index=False)
        lines += ["", f"**{heading}**", "", frame.to_markdown(index=False)]
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    return out / f"{stem}.md"
