"""Ship a trained run as the package's demo weights, and plot its validation curve.

``python -m icmformer.pipeline.ship --run results/runs/demo_model [--run results/runs/demo_model_2 ...]``
(the frozen ``demo_model`` stage of ``dvc.yaml``). Several ``--run`` are the phases of one model,
in order: each phase started from the previous phase's weights (``model.checkpoint=``). A ``--run``
may also be an earlier ship's ``--results`` folder (``val.jsonl`` and ``train_summary.json`` of
several phases): its phases come first, as they were, so a phase trained from the shipped file
can be shipped after them on a machine that no longer has their run folders.

1. loads the last run's ``model.safetensors`` (with ``--average K``: the element-wise mean of the
   last K runs' weights, a weight average of consecutive phases of one model) and writes it
   (float32; float16 with ``--fp16``) to ``icmformer/weights/<model name>.safetensors`` (what
   ``create_model(name, pretrained=True)`` loads), with the steps, images seen and training time
   of all phases in the metadata; ``--average-with FILE`` (repeatable) adds weights files to that
   mean, e.g. the previously shipped file that the last run started from (a phase that continued
   from an averaged file is averaged with it again);
2. writes the validation log of all phases (``val.jsonl``: NoC / mIoU on held-out BSDS val during
   training; steps, images and time counted from the start of the first phase, ``phase`` 1, 2, ...)
   and the phases' summaries (``train_summary.json``) to ``results/demo_model/``;
3. draws ``results/demo_model/val_curve.png``: validation NoC@85 / NoC@90 against CPU-hours.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

VAL_FILE = "val.jsonl"


def read_val_log(path: str | Path) -> list[dict]:
    """The rows of a run's ``val.jsonl``; a missing file or a bad line raises ``ValueError``."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: validation log not found (train with val.every_steps > 0)")
    rows = []
    for i, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{i}: not a JSON line ({e.msg})") from None
    if not rows:
        raise ValueError(f"{path}: no validation rows")
    return rows


def cpu_hours(rows: list[dict]) -> list[float]:
    """CPU-hours of training at each validation row: wall-clock training time (without the time
    of the earlier validations, which ``train_time_s`` includes) x torch threads."""
    out, spent = [], 0.0
    for r in rows:
        out.append(max(float(r["train_time_s"]) - spent, 0.0) * int(r.get("threads", 1)) / 3600.0)
        spent += float(r.get("seconds", 0.0))
    return out


def plot_val_curve(rows: list[dict], out: str | Path, title: str = "") -> Path:
    """Validation NoC@85 / NoC@90 (left) and mIoU at clicks 1-5 (right) against CPU-hours."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = cpu_hours(rows)
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    starts = [x[i] for i in range(1, len(rows)) if rows[i].get("phase", 1) != rows[i - 1].get("phase", 1)]
    for ax in (a, b):
        for j, s in enumerate(starts):
            ax.axvline(s, color="0.6", ls="--", lw=1, label="next phase (from the previous weights)" if j == 0 and ax is a else None)
    a.plot(x, [r["noc85"] for r in rows], "o-", label="NoC@85")
    a.plot(x, [r["noc90"] for r in rows], "s-", label="NoC@90")
    a.set_xlabel("CPU-hours of training")
    a.set_ylabel(f"clicks (max {len(rows[-1]['miou'])})")
    a.set_title("validation NoC (lower is better)")
    a.grid(alpha=0.3)
    a.legend()
    for k in range(min(5, len(rows[-1]["miou"]))):
        b.plot(x, [r["miou"][k] for r in rows], "o-", label=f"click {k + 1}")
    b.set_xlabel("CPU-hours of training")
    b.set_ylabel("mIoU")
    b.set_title("validation mIoU per click")
    b.grid(alpha=0.3)
    b.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def combine_phases(runs: list[Path]) -> tuple[list[dict], dict]:
    """The validation rows of all phases with steps, images and time counted from the start of the
    first (each row gains ``phase``), and a summary: totals and each phase's own summary."""
    rows, phases = [], []
    steps = images = seconds = 0.0
    for run in runs:
        part = read_val_log(run / VAL_FILE)
        path = run / "train_summary.json"
        summary = json.loads(path.read_text()) if path.is_file() else {}
        earlier = "per_phase" in summary  # an earlier ship's --results folder: several phases, combined
        for r in part:
            phase = len(phases) + (int(r.get("phase", 1)) if earlier else 1)
            rows.append({**r, "phase": phase, "step": int(steps + r["step"]), "images_seen": int(images + r["images_seen"]),
                         "train_time_s": round(seconds + float(r["train_time_s"]), 1)})  # fmt: skip
        last = part[-1]
        steps += summary.get("steps", last["step"])
        images += summary.get("images_seen", last["images_seen"])
        seconds += float(summary.get("train_time_s_total", last["train_time_s"]))
        phases.extend(summary["per_phase"] if earlier else [{"run": str(run), **summary}])
    threads = int(rows[-1].get("threads", 1))
    val_seconds = sum(float(r.get("seconds", 0.0)) for r in rows)  # validation time is not training
    total = {"phases": len(phases), "steps": int(steps), "images_seen": int(images), "train_time_s_total": round(seconds, 1),
             "cpu_hours": round(max(seconds - val_seconds, 0.0) * threads / 3600, 2)}  # fmt: skip
    if len(phases) == 1:
        return rows, {**phases[0], **{k: v for k, v in total.items() if k not in phases[0]}}
    return rows, {**total, "per_phase": phases}


def average_weights(paths: list[Path]):
    """The model of the first checkpoint with every floating-point tensor replaced by the mean over
    all ``paths`` (same registry model and shapes; integer buffers are the first file's)."""
    import torch

    from icmformer.models.checkpoint import read_model_metadata, read_state
    from icmformer.models.factory import load_checkpoint

    model = load_checkpoint(paths[0])
    if len(paths) == 1:
        return model
    name = read_model_metadata(paths[0])[0]
    own = model.state_dict()
    total = {k: v.double() for k, v in own.items() if v.is_floating_point()}
    for path in paths[1:]:
        other_name = read_model_metadata(path)[0]
        if other_name != name:
            raise ValueError(f"{path}: model {other_name!r} cannot be averaged with {paths[0]}'s {name!r}")
        state = read_state(path)
        for k in total:
            if k not in state or state[k].shape != own[k].shape:
                raise ValueError(f"{path}: tensor {k!r} missing or of another shape than in {paths[0]}")
            total[k] += state[k].double()
    with torch.no_grad():
        for k, v in total.items():
            own[k].copy_((v / len(paths)).to(own[k].dtype))
    return model


def ship(run: str | Path | list, weights_dir: str | Path | None = None, results_dir: str | Path = "results/demo_model",
         fp16: bool = False, average: int = 1, average_with: list | None = None) -> dict:  # fmt: skip
    """Steps 1-3 of the module docstring for one run or the phases ``[run1, run2, ...]`` of one
    model (the weights are the last phase's, or the mean of the last ``average`` phases' weights);
    returns what was written."""
    import torch

    from icmformer.models.checkpoint import save_checkpoint
    from icmformer.models.factory import weights_dir as default_weights_dir

    runs = [Path(r) for r in (run if isinstance(run, (list, tuple)) else [run])]
    if not runs:
        raise ValueError("no run given")
    if not 1 <= average <= len(runs):
        raise ValueError(f"--average {average}: must be between 1 and the number of runs ({len(runs)})")
    srcs = [r / "model.safetensors" for r in runs[-average:]]
    for src in srcs:
        if not src.is_file():
            raise ValueError(f"{src}: no trained weights (run `icmformer train` first)")
    extra = [Path(f) for f in (average_with or [])]
    for f in extra:
        if not f.is_file():
            raise ValueError(f"--average-with {f}: no such weights file")
    srcs = srcs + extra
    model = average_weights(srcs)
    rows, summary = combine_phases(runs)
    if fp16:
        model = model.to(torch.float16)
    out_dir = Path(weights_dir) if weights_dir is not None else default_weights_dir()
    dst = out_dir / f"{model.name}.safetensors"
    meta = {"train_steps": summary["steps"], "images_seen": summary["images_seen"],
            "train_time_s": summary["train_time_s_total"], "phases": summary["phases"], "dtype": "float16" if fp16 else "float32",
            "averaged_phases": average, "averaged_with": [f.name for f in extra]}  # fmt: skip
    save_checkpoint(model, dst, metadata=meta)
    res = Path(results_dir)
    res.mkdir(parents=True, exist_ok=True)
    (res / VAL_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))
    (res / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    png = plot_val_curve(rows, res / "val_curve.png", title=f"{model.name}: held-out BSDS val during training")
    return {"weights": str(dst), "bytes": dst.stat().st_size, "val_rows": len(rows), "phases": summary["phases"], "plot": str(png)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m icmformer.pipeline.ship", description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, action="append",
                   help="a training run folder (model.safetensors, val.jsonl); repeat for the phases of one model, in order")
    p.add_argument("--weights-dir", help="where the shipped weights go (default: icmformer/weights/)")
    p.add_argument("--results", default="results/demo_model", help="where the validation log and plot go")
    p.add_argument("--fp16", action="store_true", help="store float16 weights (half the size; default float32)")
    p.add_argument("--average", type=int, default=1, metavar="K",
                   help="ship the element-wise mean of the last K runs' weights (default 1: the last run's)")
    p.add_argument("--average-with", action="append", default=[], metavar="FILE",
                   help="also average in this weights file (repeatable), e.g. the shipped file the last run started from")
    args = p.parse_args(argv)
    try:
        out = ship(args.run, args.weights_dir, args.results, fp16=args.fp16, average=args.average,
                   average_with=args.average_with)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
