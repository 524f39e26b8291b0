"""``icmformer bench``: seconds per click, naive path vs optimised paths, side by side (one run)."""
from __future__ import annotations

import argparse
import json
import os


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="icmformer_vit_base_448", help="registry name (untrained weights are fine for timing)")
    p.add_argument("--checkpoint", help="time a trained checkpoint instead")
    p.add_argument("--pretrained", action="store_true", help="time --model with the weights shipped with the package")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--modes", default="naive,optimised,fast,bf16,onnx",
                   help="comma-separated: naive, optimised, fast (CPU int8), bf16 (CPU autocast), onnx (onnxruntime) (default: %(default)s)")
    p.add_argument("--clicks", type=int, default=20, help="clicks per instance (the protocol uses 20)")
    p.add_argument("--repeats", type=int, default=3, help="measured rounds after one warm-up round")
    p.add_argument("--data-root", default=os.environ.get("ICMFORMER_SHARED_DATA"), help="the folder holding GrabCut/ (an error if it does not); '' times a synthetic image")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--compile", action="store_true", help="CUDA: torch.compile the backbone in the optimised mode")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--out", help="also write the JSON result to this file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _check_inputs(args: argparse.Namespace) -> None:
    from pathlib import Path

    from icmformer.cli.errors import check_output_file

    if args.data_root and not (Path(args.data_root) / "GrabCut").is_dir():
        raise FileNotFoundError(
            f"data root {args.data_root} (--data-root or $ICMFORMER_SHARED_DATA): no GrabCut folder there "
            f"(expected {Path(args.data_root) / 'GrabCut'}); give the folder holding GrabCut/, or none to time a synthetic image"
        )
    if args.out:
        check_output_file(args.out, "--out", (".json",))


def run(args: argparse.Namespace) -> int:
    import torch

    from icmformer.benchmark import format_table, run_benchmark

    if args.threads:
        torch.set_num_threads(args.threads)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if args.clicks < 1 or args.repeats < 1:
        raise ValueError("--clicks and --repeats must be >= 1")
    _check_inputs(args)  # before the timing runs: data root and output file
    if args.pretrained and args.checkpoint:
        raise ValueError("give either --pretrained (the weights shipped for --model) or --checkpoint FILE, not both")
    res = run_benchmark(args.model, checkpoint=args.checkpoint, pretrained=args.pretrained, device=args.device, modes=modes, clicks=args.clicks,
                        repeats=args.repeats, data_root=args.data_root or None, compile=args.compile,
                        progress=not (args.quiet or args.json))  # fmt: skip
    if args.out:
        from pathlib import Path

        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res.to_dict(), indent=2))
    print(json.dumps(res.to_dict()) if args.json else format_table(res))
    return 0
