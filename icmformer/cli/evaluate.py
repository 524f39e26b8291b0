"""``icmformer evaluate``: NoC/NoF/mIoU/SPC with the standard click simulation.

Examples::

    icmformer evaluate --checkpoint model.safetensors --datasets GrabCut,Berkeley,DAVIS --out runs/vitb
    icmformer evaluate --method grabcut --datasets GrabCut --limit 2 --out /tmp/gc
    icmformer evaluate --model icmformer_vit_tiny_224 --datasets GrabCut --limit 1 --max-clicks 3 --out /tmp/smoke
    icmformer evaluate --checkpoint model.safetensors --batch-size 16 --device cuda --out runs/vitb_b16

Writes ``records.jsonl`` (one line per instance, resumable), ``run.json`` and ``summary.json`` to
``--out`` and prints a table. ``--method grabcut`` needs neither torch nor a model.

The logic is :func:`icmformer.evaluation.methods.evaluate` (which the evaluate notebook calls too).

``--batch-size K`` (model only) evaluates K instances together, one forward pass per click step
(:mod:`icmformer.evaluation.batched`); the results equal the sequential ones (K = 1, the
default). For batched runs the table's ``SPC`` is the official one, wall time / clicks, i.e. the
batched throughput per click, and ``SPC-method`` the batched call time per click divided by the
instances in the batch (each instance's share); neither is the latency of a single user's click,
which is the ``SPC-method`` of a K = 1 run.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from icmformer.cli.common import add_image_limit_argument, apply_image_limit
from icmformer.evaluation.protocol import DEFAULT_PROTOCOL, EvalProtocol


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", choices=("model", "grabcut"), default="model", help="what to evaluate (default: model)")
    parser.add_argument("--checkpoint", help="model checkpoint (.safetensors of ours, or an official isegm .pth)")
    parser.add_argument("--model", help="a registry model: untrained (smoke tests) unless --pretrained or --checkpoint, e.g. icmformer_vit_tiny_224")
    parser.add_argument("--onnx", metavar="DIR", help="model: evaluate an ONNX export (icmformer export-onnx --out DIR) with onnxruntime")
    parser.add_argument("--pretrained", action="store_true", help="with --model: the weights shipped with the package (see icmformer.list_models(pretrained=True))")
    parser.add_argument("--datasets", default="GrabCut,Berkeley,DAVIS", help="comma-separated dataset names (default: %(default)s)")
    parser.add_argument("--data-root", default="data", help="folder holding the datasets (default: %(default)s)")
    parser.add_argument("--out", help="output folder (default: results/runs/evaluate_<method>)")
    parser.add_argument("--max-clicks", type=int, default=DEFAULT_PROTOCOL.max_clicks, help="clicks per instance (default: %(default)s)")
    parser.add_argument("--stop-at-target", action="store_true", help="stop an instance at IoU 0.90 as the official script")
    parser.add_argument("--no-zoom-in", action="store_true", help="model: no zoom-in (whole image at the target size)")
    parser.add_argument("--no-flip", action="store_true", help="model: no horizontal-flip averaging")
    parser.add_argument("--target-size", type=int, help="model: network input side (default: the model's input size, 448 for ViT-B)")
    parser.add_argument(
        "--davis-target-size", type=int,
        help="model: input side on DAVIS (default: 1.5x the model's input size, the official 672 for 448)",
    )
    parser.add_argument("--device", help="model: torch device (default: cuda if available, else cpu)")
    parser.add_argument(
        "--batch-size", type=int, default=1,
        help="model: instances evaluated together, one forward pass per click step (default: %(default)s, sequential); "
        "SPC is then wall time / clicks and SPC-method the batch call time / instances in the batch",
    )
    parser.add_argument(
        "--fast", nargs="?", const="int8", choices=("int8", "bf16"),
        help="model, CPU: an opt-in fast mode, to compare its NoC with exact mode: int8 (the default of a bare --fast: "
        "dynamic quantisation of the Linear layers) or bf16 (autocast with bf16 Linear/Conv weights, AMX where the CPU has it)",
    )
    parser.add_argument("--limit", type=int, help="only the first N images of each dataset (quick runs)")
    parser.add_argument("--no-resume", action="store_true", help="start over instead of resuming the records in --out")
    parser.add_argument("--grabcut-max-side", type=int, default=320, help="grabcut: working resolution, longer side (default: %(default)s)")
    parser.add_argument("--grabcut-iterations", type=int, default=2, help="grabcut: iterations per click (default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_image_limit_argument(parser)


def protocol_from_args(args: argparse.Namespace) -> EvalProtocol:
    """The evaluation protocol the flags describe (defaults: :data:`DEFAULT_PROTOCOL`)."""
    return DEFAULT_PROTOCOL.with_(
        max_clicks=args.max_clicks, stop_at_target=args.stop_at_target or None, zoom_in=not args.no_zoom_in,
        flip=not args.no_flip, target_size=args.target_size, davis_target_size=args.davis_target_size,
    )


def run(args: argparse.Namespace) -> int:
    from icmformer.cli.errors import check_writable_dir
    from icmformer.evaluation.methods import evaluate
    from icmformer.evaluation.runner import format_table

    apply_image_limit(args)
    if args.max_clicks < 1:
        raise ValueError(f"--max-clicks must be >= 1, got {args.max_clicks}")
    if args.pretrained and not args.model:
        raise ValueError("--pretrained needs --model NAME (the model whose shipped weights to load)")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    out = Path(args.out or f"results/runs/evaluate_{args.method}")
    check_writable_dir(out, "--out")  # before any model is loaded
    summary = evaluate(
        args.datasets, args.data_root, out, args.method, protocol_from_args(args), batch_size=args.batch_size,
        limit=args.limit, resume=not args.no_resume, progress=not args.quiet,
        grabcut=dict(max_side=args.grabcut_max_side, iterations=args.grabcut_iterations),
        **(dict(checkpoint=args.checkpoint, model=args.model, pretrained=args.pretrained, device=args.device, fast=args.fast,
                **({"onnx": args.onnx} if args.onnx else {}))
           if args.method == "model" else {}),
    )  # fmt: skip
    print(format_table(summary))
    print(f"device: {summary['device']}; run time {summary['run_time_s']:.1f} s; records and summary in {out}")
    warn = sum(d.get("warnings", 0) for d in summary["datasets"].values())
    if warn:
        print(f"{warn} data warning(s); see summary.json")
    return 0
