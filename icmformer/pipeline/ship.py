"""Ship a trained run as the package's demo weights, and plot its validation curve.

``python -m icmformer.pipeline.ship --run results/runs/demo_model`` (the frozen ``demo_model``
stage of ``dvc.yaml``):

1. loads ``<run>/model.safetensors`` and writes it (float32; float16 with ``--fp16``) to
   ``icmformer/weights/<model name>.safetensors`` (what ``create_model(name, pretrained=True)``
   loads), with the run's step count, images seen and training time in the metadata;
2. copies the run's validation log (``val.jsonl``: NoC / mIoU on held-out BSDS val during
   training) and summary to ``results/demo_model/``;
3. draws ``results/demo_model/val_curve.png``: validation NoC@85 / NoC@90 against CPU-hours.
"""
from __future__ import annotations

import argparse
import json
import shutil
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


def ship(run: str | Path, weights_dir: str | Path | None = None, results_dir: str | Path = "results/demo_model",
         fp16: bool = False) -> dict:  # fmt: skip
    """Steps 1-3 of the module docstring; returns what was written."""
    import torch

    from icmformer.models.checkpoint import save_checkpoint
    from icmformer.models.factory import load_checkpoint, weights_dir as default_weights_dir

    run = Path(run)
    src = run / "model.safetensors"
    if not src.is_file():
        raise ValueError(f"{src}: no trained weights (run `icmformer train` first)")
    model = load_checkpoint(src)
    summary_path = run / "train_summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    rows = read_val_log(run / VAL_FILE)
    if fp16:
        model = model.to(torch.float16)
    out_dir = Path(weights_dir) if weights_dir is not None else default_weights_dir()
    dst = out_dir / f"{model.name}.safetensors"
    meta = {"train_steps": summary.get("steps", rows[-1]["step"]), "images_seen": rows[-1]["images_seen"],
            "train_time_s": rows[-1]["train_time_s"], "dtype": "float16" if fp16 else "float32"}  # fmt: skip
    save_checkpoint(model, dst, metadata=meta)
    res = Path(results_dir)
    res.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run / VAL_FILE, res / VAL_FILE)
    if summary_path.is_file():
        shutil.copyfile(summary_path, res / "train_summary.json")
    png = plot_val_curve(rows, res / "val_curve.png", title=f"{model.name}: held-out BSDS val during training")
    return {"weights": str(dst), "bytes": dst.stat().st_size, "val_rows": len(rows), "plot": str(png)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m icmformer.pipeline.ship", description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="the training run folder (model.safetensors, val.jsonl)")
    p.add_argument("--weights-dir", help="where the shipped weights go (default: icmformer/weights/)")
    p.add_argument("--results", default="results/demo_model", help="where the validation log and plot go")
    p.add_argument("--fp16", action="store_true", help="store float16 weights (half the size; default float32)")
    args = p.parse_args(argv)
    try:
        out = ship(args.run, args.weights_dir, args.results, fp16=args.fp16)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
