"""First check on a GPU machine: can it train and evaluate the paper's ViT-B@448, and how fast?

Three measurements, printed as one table and written to ``<out>/gpu_check.json``:

1. about ``--train-seconds`` (default 60) of ViT-B@448 training with the paper config
   (``configs/paper_vit_base_448_sbd.yaml``: batch 24, bf16 autocast, iterative clicks) on
   ``data/SBD`` or, without it, BSDS_train read as SBD: images/s, peak GPU memory, bf16 on/off;
2. seconds per click of the naive and the optimised predictor (``icmformer bench``, ViT-B@448);
3. the wall time of a GrabCut evaluation (20 clicks, zoom-in + flip) of the trained model.

The MAE weights are taken from ``data/weights/mae_pretrain_vit_base.pth``; without that file a
stand-in with the same layout and random values is written (the check is about speed, not
accuracy). ``tools/gpu_check.sh`` runs this after ``nvidia-smi``; see README "GPU check".
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def find_train_root(data_root: Path) -> Path:
    for cand in (data_root / "SBD", data_root / "BSDS_train", REPO.parent / "shared" / "data" / "BSDS_train"):
        if cand.is_dir():
            return cand
    raise FileNotFoundError(f"no training set: expected {data_root}/SBD or {data_root}/BSDS_train (see data/README.md)")


def find_eval_root(data_root: Path) -> Path:
    for cand in (data_root, REPO.parent / "shared" / "data"):
        if (cand / "GrabCut").is_dir():
            return cand
    raise FileNotFoundError(f"GrabCut not found under {data_root} or ../shared/data (see data/README.md)")


def _train(args, out: Path, steps: int, weights: Path | None, train_root: Path, tag: str) -> dict:
    from icmformer.cli import main as icmformer

    run = out / tag
    status = icmformer(["train", "--config", args.config, "--output-dir", str(run), "--quiet",
                        f"max_steps={steps}", f"device={args.device}", f"data.data_root={train_root}",
                        f"batch_size={args.batch_size}", f"num_workers={args.num_workers}"]
                       + ([f"model.pretrained_backbone={weights}"] if weights else []) + list(args.override))  # fmt: skip
    if status != 0:
        raise RuntimeError(f"icmformer train failed with status {status}")
    return json.loads((run / "train_summary.json").read_text()) | {"run": str(run)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu (only to test this script)")
    ap.add_argument("--config", default=str(REPO / "configs" / "paper_vit_base_448_sbd.yaml"))
    ap.add_argument("--data-root", default=str(REPO / "data"))
    ap.add_argument("--train-seconds", type=float, default=60.0, help="length of the timed training run")
    ap.add_argument("--batch-size", type=int, default=24)
    ap.add_argument("--num-workers", type=int, default=4)
    ap.add_argument("--warmup-steps", type=int, default=3, help="steps of the first run, which sizes the timed one")
    ap.add_argument("--bench-model", default="icmformer_vit_base_448")
    ap.add_argument("--bench-clicks", type=int, default=20)
    ap.add_argument("--eval-limit", type=int, default=0, help="GrabCut images to evaluate (0 = all 50)")
    ap.add_argument("--max-clicks", type=int, default=20)
    ap.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                    help="further training config overrides (repeatable), e.g. model.name=icmformer_vit_tiny_224")
    ap.add_argument("--out", default=str(REPO / "results" / "gpu_check"))
    args = ap.parse_args(argv)

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device visible to torch (run on a GPU machine, or --device cpu to test the script)", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data_root = Path(args.data_root)
    try:
        train_root, eval_root = find_train_root(data_root), find_eval_root(data_root)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    from icmformer.training.config import load_config

    try:
        named = load_config(args.config, list(args.override)).model.pretrained_backbone
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    weights = Path(named) if named else None
    if weights is not None and not weights.is_file():
        from icmformer.pipeline.weights import write_upstream_weights

        stand_in = Path(tempfile.mkdtemp(prefix="gpu_check_weights_"))
        write_upstream_weights(stand_in, [weights.name])
        print(f"{weights} not found: using a stand-in with the upstream layout and random values ({stand_in})")
        weights = stand_in / weights.name
    report: dict = {"device": args.device, "config": args.config, "train_root": str(train_root), "weights": str(weights or "")}
    if args.device == "cuda":
        report["gpu"] = torch.cuda.get_device_name(0)
        report["torch"] = torch.__version__

    # 1. training: a short run to size the timed one, then about --train-seconds of steps
    warm = _train(args, out, args.warmup_steps, weights, train_root, "warmup")
    step_s = warm["wall_time_s"] / max(1, warm["steps"])
    steps = max(1, int(args.train_seconds / step_s))
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    timed = _train(args, out, steps, weights, train_root, "timed")
    report["train"] = {"steps": timed["steps"], "batch_size": timed["batch_size"], "wall_s": round(timed["wall_time_s"], 1),
                       "images_per_s": round(timed["images_per_s"], 2), "bf16": timed["bf16"],
                       "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if args.device == "cuda" else None,
                       "final_loss": timed["final_loss"]}  # fmt: skip

    # 2. seconds per click, naive vs optimised
    from icmformer.benchmark import run_benchmark

    bench = run_benchmark(args.bench_model, device=args.device, modes=("naive", "optimised"), clicks=args.bench_clicks,
                          repeats=2, data_root=eval_root, progress=False).to_dict()  # fmt: skip
    report["spc"] = {m["mode"]: round(m["spc_s"], 4) for m in bench["modes"]}

    # 3. GrabCut evaluation of the trained model (the paper's protocol)
    from icmformer.cli import main as icmformer

    ev = ["evaluate", "--checkpoint", str(Path(timed["run"]) / "model.safetensors"), "--datasets", "GrabCut",
          "--data-root", str(eval_root), "--out", str(out / "eval"), "--max-clicks", str(args.max_clicks),
          "--device", args.device, "--quiet"]  # fmt: skip
    if args.eval_limit:
        ev += ["--limit", str(args.eval_limit)]
    t0 = time.perf_counter()
    if icmformer(ev) != 0:
        raise RuntimeError("icmformer evaluate failed")
    summary = json.loads((out / "eval" / "summary.json").read_text())["datasets"]["GrabCut"]
    report["grabcut_eval"] = {"wall_s": round(time.perf_counter() - t0, 1), "instances": summary["instances"],
                              "clicks": args.max_clicks, "SPC_s": round(summary["SPC"], 4)}  # fmt: skip

    (out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    t, s, e = report["train"], report["spc"], report["grabcut_eval"]
    print(f"device            {report.get('gpu', args.device)}")
    print(f"train ViT-B@448   {t['images_per_s']} img/s  batch {t['batch_size']}  bf16 {t['bf16']}  "
          f"peak memory {t['peak_memory_gib']} GiB  ({t['steps']} steps, {t['wall_s']} s)")
    print(f"seconds per click naive {s.get('naive')}  optimised {s.get('optimised')}")
    print(f"GrabCut eval      {e['wall_s']} s for {e['instances']} instances x {e['clicks']} clicks (SPC {e['SPC_s']} s)")
    print(f"written: {out / 'gpu_check.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
