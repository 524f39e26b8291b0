"""``icmformer export-onnx``: the model as two ONNX graphs (image encoder, click decoder) + JSON.

Examples::

    icmformer export-onnx --checkpoint results/runs/vit/model.safetensors --out export/vit
    icmformer export-onnx --model icmformer_vit_demo_320 --pretrained --out export/demo
    icmformer export-onnx --model icmformer_vit_base_448 --out export/vitb    # untrained: timing / parity only

Writes ``encoder.onnx``, ``decoder.onnx`` and ``icmformer_onnx.json`` (model, input size,
normalisation, click convention, input / output names and shapes, opset, parity) to ``--out``; see
:mod:`icmformer.deploy.onnx_export` for the graphs' inputs and outputs. Unless ``--no-verify``,
both graphs are run with onnxruntime on seeded inputs and the export fails (exit 1) if a logit
differs from PyTorch by more than 1e-4.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", help="model checkpoint (.safetensors of ours, or an official isegm .pth)")
    parser.add_argument("--model", help="registry model name: untrained weights (prints a warning) unless --pretrained or --checkpoint")
    parser.add_argument("--pretrained", action="store_true", help="with --model: the weights shipped with the package")
    parser.add_argument("--out", required=True, help="output folder (created)")
    parser.add_argument("--input-size", type=int, help="crop side T the graphs take (default: the model's input size)")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset (default: %(default)s)")
    parser.add_argument("--no-verify", action="store_true", help="skip the onnxruntime-vs-PyTorch parity check")
    parser.add_argument("--force", action="store_true", help="overwrite an existing export in --out")


def run(args: argparse.Namespace) -> int:
    from icmformer.deploy.onnx_export import DECODER_FILE, ENCODER_FILE, METADATA_FILE, export_onnx
    from icmformer.interactive.io import UntrainedModelWarning, load_model

    if not args.checkpoint and not args.model:
        raise ValueError("give --checkpoint FILE (a trained model) or --model NAME [--pretrained]")
    if args.input_size is not None and args.input_size < 1:
        raise ValueError(f"--input-size must be a positive number of pixels, got {args.input_size}")
    if not 14 <= args.opset <= 23:
        raise ValueError(f"--opset {args.opset}: choose an ONNX opset between 14 and 23 (default 18)")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder")
    existing = [f for f in (ENCODER_FILE, DECODER_FILE, METADATA_FILE) if (out / f).exists()]
    if existing and not args.force:
        raise ValueError(f"--out {out} already holds an export ({', '.join(existing)}); pass --force to overwrite it")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedModelWarning)
        model = load_model(args.checkpoint, args.model, announce=False, pretrained=args.pretrained)
    trained = args.checkpoint is not None or args.pretrained
    if not trained:
        print(f"warning: --model {args.model} without --checkpoint/--pretrained: UNTRAINED weights (fine for timing and parity)",
              file=sys.stderr)  # fmt: skip
    source = {"checkpoint": args.checkpoint, "pretrained": bool(args.pretrained), "trained": trained}
    t0 = time.perf_counter()
    meta = export_onnx(model, out, input_size=args.input_size, opset=args.opset, verify=not args.no_verify, source=source)
    took = time.perf_counter() - t0
    sizes = ", ".join(f"{f} {(out / f).stat().st_size / 2**20:.1f} MB" for f in (ENCODER_FILE, DECODER_FILE))
    t = meta["input_size"]
    print(f"{meta['model']} @ {t}x{t}, opset {meta['opset']}, state tensors {meta['state']['tensors']}: {sizes} -> {out} ({took:.0f} s)")
    if "parity" in meta:
        p = meta["parity"]
        print(f"parity vs PyTorch (onnxruntime, batches {p['batches']}): max |logit diff| {p['max_abs_logit_diff']:.2e}, "
              f"max |state diff| {p['max_abs_state_diff']:.2e}")  # fmt: skip
    return 0
