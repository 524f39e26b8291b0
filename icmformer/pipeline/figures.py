"""Figures of the paper, rebuilt from evaluation records and trained checkpoints.

- Fig. 4: mIoU against the number of clicks, per dataset (from the summaries' mIoU@k), with the
  paper's NoC@85 / NoC@90 marked on the 85% / 90% lines.
- NoC distributions: per-instance NoC@90 per dataset and model (from the records).
- Fig. 5: click-by-click qualitative examples (positive clicks green, negative red, IoU per click).
- Fig. 6: objects made of several disconnected parts (ground truth with >= 2 components).
- Attention maps of the cross-modality blocks for the first click's token.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from icmformer.evaluation.protocol import MAX_CLICKS  # noqa: E402

POS_COLOR, NEG_COLOR, MASK_COLOR = "#2ca02c", "#d62728", np.array([30, 144, 255])


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # no timestamps/software tags: the same data gives the same bytes
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return path


def miou_frame(summaries: Mapping, labels: Mapping[str, str], datasets: Sequence[str]) -> pd.DataFrame:
    rows = []
    for slot, label in labels.items():
        for ds in datasets:
            curve = summaries.get(slot, {}).get(ds, {}).get("mIoU@k")
            if curve:
                rows.extend({"model": label, "dataset": ds, "clicks": k + 1, "mIoU": v} for k, v in enumerate(curve))
    return pd.DataFrame(rows)


def paper_noc_points(rows: Sequence[Mapping], datasets: Sequence[str]) -> dict[str, dict[str, dict[str, float]]]:
    """The paper's NoC@85 / NoC@90 (Table 1) for each table row with a ``paper`` entry.

    ``{label: {dataset: {"noc85": x, "noc90": y}}}``; cells the paper leaves empty are left out.
    """
    from icmformer import reference

    out: dict[str, dict[str, dict[str, float]]] = {}
    for row in rows:
        if not row.get("paper"):
            continue
        for ds in datasets:
            for m in ("noc85", "noc90"):
                try:
                    v = reference.paper_value("table1", ds, m, **row["paper"])
                except KeyError:
                    v = None
                if v is not None:
                    out.setdefault(row["label"], {}).setdefault(ds, {})[m] = v
    return out


def fig_miou_vs_clicks(summaries: Mapping, labels: Mapping[str, str], datasets: Sequence[str], path,
                       paper_points: Mapping[str, Mapping[str, Mapping[str, float]]] | None = None) -> Path:  # fmt: skip
    """Fig. 4: mIoU@k for k = 1..20, one panel per dataset, one line per model.

    ``paper_points`` (:func:`paper_noc_points`): the paper's NoC@85 / NoC@90 of each model's paper
    row, drawn as stars on the 85% / 90% lines in the model's colour. The paper publishes its
    curves only as a plot, so its mean clicks are what can be put beside ours (a mean NoC is
    not the click where the mIoU curve crosses the line, but both read "how soon").
    """
    df = miou_frame(summaries, labels, datasets)
    if df.empty:
        raise ValueError("no mIoU curves found in the evaluation summaries")
    present = [d for d in datasets if d in set(df["dataset"])]
    # one colour per model across all panels, one legend for the figure
    models = list(dict.fromkeys(df["model"]))
    palette = dict(zip(models, sns.color_palette(n_colors=len(models))))
    fig, axes = plt.subplots(1, len(present), figsize=(4.2 * len(present), 3.6), squeeze=False, sharey=True)
    for ax, ds in zip(axes[0], present):
        sns.lineplot(data=df[df["dataset"] == ds], x="clicks", y="mIoU", hue="model", hue_order=[m for m in models if m in set(df[df["dataset"] == ds]["model"])],
                     palette=palette, marker="o", markersize=3, ax=ax, legend=False)  # fmt: skip
        ax.set_title(ds)
        ax.axhline(0.85, color="0.7", lw=0.8, ls="--")
        ax.axhline(0.90, color="0.5", lw=0.8, ls="--")
        marked = [m for m in models if (paper_points or {}).get(m)]
        for k, m in enumerate(marked):
            cell = paper_points[m].get(ds, {})
            dy = 0.018 * (k - (len(marked) - 1) / 2)  # models with close paper values stay apart
            for key, y in (("noc85", 0.85), ("noc90", 0.90)):
                if key in cell:
                    ax.scatter([cell[key]], [y + dy], marker="*", s=80, color=palette[m], edgecolors="black", linewidths=0.6, zorder=5)
        ax.set_xticks([1, 5, 10, 15, 20])
        ax.set_ylim(0, 1)
    handles = [plt.Line2D([], [], color=palette[m], marker="o", markersize=3, label=m) for m in models]
    if any((paper_points or {}).get(m) for m in models):
        handles.append(plt.Line2D([], [], color="0.4", marker="*", markersize=9, markeredgecolor="black", ls="",
                                  label="paper: NoC@85 / NoC@90 of the model's paper row (Table 1; offset up/down per model)"))  # fmt: skip
    fig.legend(handles=handles, loc="lower center", ncol=min(len(models), 3), frameon=False, bbox_to_anchor=(0.5, -0.16))
    fig.subplots_adjust(top=0.85)
    fig.suptitle("mIoU vs number of clicks (dashed: 85% and 90%)")
    return _save(fig, path)


def fig4_from_params(params: Mapping, eval_dir: str | Path, path: str | Path) -> Path:
    """Fig. 4 as the ``figures`` stage draws it: the Table 1 rows of ``params`` (plus
    ``tables.table1.extra_rows``), their summaries under ``eval_dir`` and the paper's NoC marks."""
    from icmformer.pipeline.tables import add_extra_rows, load_summaries

    table1 = params["tables"]["table1"]
    summaries, rows = add_extra_rows(load_summaries(eval_dir), table1["rows"], table1.get("extra_rows"))
    labels = {r["slot"]: r["label"] for r in rows}
    return fig_miou_vs_clicks(summaries, labels, table1["datasets"], path, paper_points=paper_noc_points(rows, table1["datasets"]))


def read_records(path: str | Path) -> list[dict]:
    from icmformer.evaluation.runner import read_records as _read

    return _read(path)


def noc_frame(records_by_slot: Mapping[str, Sequence[Mapping]], labels: Mapping[str, str], thr: float = 0.90,
              max_clicks: int = MAX_CLICKS) -> pd.DataFrame:  # fmt: skip
    from icmformer.evaluation.metrics import noc

    rows = []
    for slot, records in records_by_slot.items():
        for r in records:
            rows.append({"model": labels.get(slot, slot), "dataset": r["dataset"], "NoC@90": noc(r["ious"], thr, max_clicks)})
    return pd.DataFrame(rows)


def fig_noc_distribution(records_by_slot, labels, path, thr: float = 0.90) -> Path:
    """Per-instance NoC@90 per dataset (boxes) and model (colours); 20 = never reached."""
    df = noc_frame(records_by_slot, labels, thr)
    if df.empty:
        raise ValueError("no evaluation records found")
    fig, ax = plt.subplots(figsize=(2.2 * df["dataset"].nunique() + 3, 3.8))
    sns.boxplot(data=df, x="dataset", y="NoC@90", hue="model", ax=ax, fliersize=2)
    ax.set_ylim(0, 21)
    ax.set_title("Clicks needed per instance to reach 90% IoU (20 = failure)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1, 1))
    return _save(fig, path)


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    out = image.astype(np.float32).copy()
    m = mask.astype(bool)
    out[m] = (1 - alpha) * out[m] + alpha * MASK_COLOR
    return out.clip(0, 255).astype(np.uint8)


def click_by_click(model, sample, instance: int = 0, max_clicks: int = MAX_CLICKS, **predictor_options) -> dict:
    """Run the protocol on one instance, keeping the mask after every click."""
    from icmformer.evaluation.loop import evaluate_sample
    from icmformer.evaluation.predictor import make_predict_fn
    from icmformer.evaluation.protocol import PRED_THRESHOLD

    frames = []

    def keep(step, clicks, probs, iou):
        frames.append({"clicks": list(clicks), "mask": probs > PRED_THRESHOLD, "iou": iou})

    gt = sample.masks[instance]
    evaluate_sample(gt, make_predict_fn(model, sample.image, **predictor_options), max_clicks=max_clicks, callback=keep)
    name = sample.instance_ids[instance]
    if sample.image_path is not None:  # <dataset>/<images folder>/<file>: name the dataset too
        name = f"{Path(sample.image_path).parent.parent.name}/{name}"
    return {"image": sample.image, "gt": gt, "frames": frames, "name": name}


def draw_clicks(ax, clicks) -> None:
    for c in clicks:
        y, x = c.coords
        ax.scatter([x], [y], s=36, c=POS_COLOR if c.is_positive else NEG_COLOR, edgecolors="white", linewidths=1.0)


def fig_click_by_click(runs: Sequence[Mapping], steps: Sequence[int], path, title: str) -> Path:
    """One row per instance: ground truth, then the mask after each click in ``steps`` (1-based)."""
    if not runs:
        raise ValueError("no instances to draw")
    fig, axes = plt.subplots(len(runs), len(steps) + 1, figsize=(2.6 * (len(steps) + 1), 2.3 * len(runs)), squeeze=False)
    for row, run in zip(axes, runs):
        row[0].imshow(overlay(run["image"], run["gt"] == 1))
        row[0].set_title(f"{run['name']}\nground truth", fontsize=8)
        for ax, k in zip(row[1:], steps):
            frame = run["frames"][min(k, len(run["frames"])) - 1]
            ax.imshow(overlay(run["image"], frame["mask"]))
            draw_clicks(ax, frame["clicks"])
            ax.set_title(f"click {len(frame['clicks'])}: IoU {frame['iou']:.3f}", fontsize=8)
        for ax in row:
            ax.axis("off")
    fig.suptitle(title)
    return _save(fig, path)


def multi_part_instances(dataset, min_parts: int = 2, limit: int = 3) -> list[tuple[int, int]]:
    """(image index, instance index) of objects whose ground truth has >= ``min_parts`` parts."""
    import cv2

    found = []
    for i in range(len(dataset)):
        sample = dataset[i]
        for j, m in enumerate(sample.masks):
            n, _, stats, _ = cv2.connectedComponentsWithStats((m == 1).astype(np.uint8), connectivity=8)
            big = int((stats[1:, cv2.CC_STAT_AREA] >= 0.01 * (m == 1).sum()).sum())
            if big >= min_parts:
                found.append((i, j))
                if len(found) >= limit:
                    return found
    return found


def fig_attention(model, sample, path, instance: int = 0, predictor_target: int | None = None) -> Path:
    """Cross-attention of each cross block for the first click's token, averaged over heads
    (computed by :func:`icmformer.interactive.attention.run_attention`, drawn with the panels of
    :mod:`icmformer.interactive.figures`, as the attention notebook does)."""
    from icmformer.evaluation.clicker import Clicker
    from icmformer.interactive.attention import run_attention
    from icmformer.interactive.figures import attention_panel, prediction_panel

    if not getattr(model.config, "cross_modality", True):
        raise ValueError("the model has no cross-modality blocks (cross_modality=False)")
    gt = sample.masks[instance]
    click = Clicker(gt).make_next_click(np.zeros(gt.shape, dtype=bool))
    res = run_attention(model, sample.image, [click], target_size=predictor_target, iterative=False)
    fig, axes = plt.subplots(1, res.num_blocks + 1, figsize=(3 * (res.num_blocks + 1), 3.2))
    axes[0].imshow(prediction_panel(res))
    axes[0].set_title("prediction after click 1", fontsize=9)
    for k, ax in enumerate(axes[1:]):
        ax.imshow(attention_panel(res, res.mean_map(k)))
        ax.set_title(f"cross block {k + 1}: click token -> image", fontsize=9)
    for ax in axes:
        ax.axis("off")
    return _save(fig, path)


def write_json(obj, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True))
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m icmformer.pipeline.figures fig4``: redraw Fig. 4 alone from the evaluation summaries
    (what the ``figures`` stage draws first; the other figures need checkpoints and records)."""
    import argparse
    import sys

    import yaml

    ap = argparse.ArgumentParser(prog="python -m icmformer.pipeline.figures", description=main.__doc__.splitlines()[0])
    ap.add_argument("figure", choices=["fig4"])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--eval-dir", default="results/eval")
    ap.add_argument("--out", default="results/figures/fig4_miou_vs_clicks.png")
    args = ap.parse_args(argv)
    if not Path(args.params).is_file():
        print(f"error: params file not found: {args.params}", file=sys.stderr)
        return 1
    try:
        path = fig4_from_params(yaml.safe_load(Path(args.params).read_text()), args.eval_dir, args.out)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
