"""``icmformer validate``: compare weights on a held-out training split, side by side.

The validation the trainer runs (:mod:`icmformer.training.validate`: zoom-in, no flip, first
click at the object centre, each next click in the largest error region), on a split of the
*training* data, so that recipes and checkpoints are chosen without touching the benchmark sets::

    icmformer validate --checkpoint results/runs/demo_model_4/model.safetensors \\
        --checkpoint results/runs/demo_model_5/model.safetensors --max-instances 0
    icmformer validate --model icmformer_vit_demo_320 --pretrained --out val.jsonl

One row per weights file (NoC@85/90, NoF@90, mIoU after clicks 1/2/3/5/last, seconds), all on
the same instances; ``--out`` appends the rows as JSON lines, with each instance's NoC
(``noc85_each`` / ``noc90_each``). Every file after the first is also compared with the first,
instance by instance (``vs_first``: the mean NoC difference with a 95 % bootstrap interval, and how
many instances need fewer / more clicks), so a difference can be told from the noise of the split.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from icmformer.cli.errors import check_output_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", action="append", default=[], metavar="FILE",
                        help="weights to validate (.safetensors of ours or an official .pth); repeat to compare several")  # fmt: skip
    parser.add_argument("--model", help="registry model: the architecture for --checkpoint, or with --pretrained its shipped weights")
    parser.add_argument("--pretrained", action="store_true", help="with --model: also validate the weights shipped with the package")
    parser.add_argument("--data-root", default="data/BSDS_train", help="the held-out data (default: %(default)s)")
    parser.add_argument("--kind", choices=("sbd", "folder"), default="sbd", help="reader of --data-root (default: %(default)s)")
    parser.add_argument("--split", default="val", help="sbd: the split file <split>.txt (default: %(default)s)")
    parser.add_argument("--max-instances", type=int, default=60,
                        help="at most N instances, evenly spaced (0: all that cover 1%% of their image; default: %(default)s)")  # fmt: skip
    parser.add_argument("--max-clicks", type=int, default=20, help="clicks per instance (default: %(default)s)")
    parser.add_argument("--target-size", type=int, help="network input side (default: the model's input size)")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="instances per forward pass (the batched evaluator; same IoUs as 1, faster; default: %(default)s)")  # fmt: skip
    parser.add_argument("--device", help="torch device (default: cpu)")
    parser.add_argument("--out", metavar="FILE", help="append one JSON line per weights file here (.jsonl)")
    parser.add_argument("--quiet", action="store_true", help="no table on stdout")


def _check(args: argparse.Namespace) -> list[tuple[str, str | None, bool]]:
    if args.pretrained and not args.model:
        raise ValueError("--pretrained needs --model NAME (the model whose shipped weights to validate)")
    if not args.checkpoint and not args.pretrained:
        raise ValueError("nothing to validate: give --checkpoint FILE (repeatable) and/or --model NAME --pretrained")
    if args.max_instances < 0:
        raise ValueError(f"--max-instances must be >= 0 (0: all), got {args.max_instances}")
    if args.max_clicks < 1:
        raise ValueError(f"--max-clicks must be >= 1, got {args.max_clicks}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.target_size is not None and args.target_size < 32:
        raise ValueError(f"--target-size must be >= 32, got {args.target_size}")
    for ckpt in args.checkpoint:
        if not Path(ckpt).is_file():
            raise FileNotFoundError(f"checkpoint not found: {ckpt}")
    root = Path(args.data_root)
    if not root.is_dir():
        raise FileNotFoundError(f"--data-root {root} not found (a folder in the {args.kind} layout)")
    if args.out:
        check_output_file(args.out, "--out", (".jsonl",))
    runs = [(ckpt, args.model, False) for ckpt in args.checkpoint]
    if args.pretrained:
        runs.append((f"{args.model} (shipped)", args.model, True))
    return runs


def format_row(row: dict) -> str:
    m = row["miou"]
    picks = [m[i - 1] for i in (1, 2, 3, 5) if i <= len(m)] + [m[-1]]
    return (f"{row['noc85']:7.2f} {row['noc90']:7.2f} {row['nof90']:6d}  " + " / ".join(f"{v:.3f}" for v in picks)
            + f"  {row['seconds']:7.1f}  {row['weights']}")  # fmt: skip


def format_paired(paired: dict) -> str:
    parts = []
    for thr in ("85", "90"):
        p = paired[f"noc{thr}"]
        parts.append(f"NoC@{thr} {p['mean']:+.2f} [{p['lo']:+.2f}, {p['hi']:+.2f}], fewer/more on {p['fewer']}/{p['more']}")
    return "        vs the first: " + "; ".join(parts)


def run(args: argparse.Namespace) -> int:
    runs = _check(args)
    from icmformer.interactive.io import load_model
    from icmformer.training.validate import paired_noc_difference, validate_model

    max_instances = args.max_instances or 10**9
    rows = []
    if not args.quiet:
        print(f"held-out {args.data_root} ({args.split}), zoom-in, no flip, {args.max_clicks} clicks")
        print(" NoC@85  NoC@90 NoF@90  mIoU after clicks 1/2/3/5/last  seconds  weights")
    for label, model_name, pretrained in runs:
        model = load_model(None if pretrained else label, model_name, device=args.device, announce=False, pretrained=pretrained)
        row = validate_model(model, args.kind, args.data_root, split=args.split, max_instances=max_instances,
                             max_clicks=args.max_clicks, target_size=args.target_size, per_instance=True,
                             batch_size=args.batch_size)  # fmt: skip
        row = {"weights": label, "input": args.target_size or int(model.config.img_size), **row}
        if rows:
            row["vs_first"] = {f"noc{t}": paired_noc_difference(rows[0][f"noc{t}_each"], row[f"noc{t}_each"]) for t in ("85", "90")}
        rows.append(row)
        if not args.quiet:
            print(format_row(row), flush=True)
            if "vs_first" in row:
                print(format_paired(row["vs_first"]), flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run(argparse.ArgumentParser().parse_args()))
