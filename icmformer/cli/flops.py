"""``icmformer flops``: parameters and FLOPs, ours and the paper's (thop) convention, side by side."""
from __future__ import annotations

import argparse
import json

NOTES = {
    "icmformer_vit_base_448": "paper convention differs from the paper by the official click self-attention calling its LayerNorm twice (+0.01 G)",
    "icmformer_swin_base_384": "the official code also merges the early-fusion stream after stage 2 without using it (+0.60 G at 384) and calls a LayerNorm twice",
    "icmformer_swin_small_224": "the paper's 68.14M / 106.74G (labelled 224) is only reproduced at a 384x384 input with window 7: try --size 384 384",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="registry name (see `icmformer flops --list`)")
    p.add_argument("--size", nargs=2, type=int, metavar=("H", "W"), help="input size (default: the model's training size)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="model override, e.g. --set cross_modality=false")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def parse_overrides(items: list[str]) -> dict:
    import yaml

    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not KEY=VALUE")
        k, v = item.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out


def run(args: argparse.Namespace) -> int:
    from icmformer.models.complexity import complexity

    c = complexity(args.model, tuple(args.size) if args.size else None, **parse_overrides(args.set))
    if args.json:
        print(json.dumps(c.to_dict()))
        return 0
    h, w = c.input_size
    rows = [
        ("params (M)", f"{c.params_m:.2f}", f"{c.paper_params_m:.2f}", c.reported_params_m),
        ("FLOPs (G)", f"{c.gflops:.2f}", f"{c.paper_gflops:.2f}", c.reported_gflops),
    ]
    print(f"{c.model} @ {h}x{w}, one forward pass with one click")
    print(f"{'':12s} {'ours':>10s} {'paper conv.':>12s} {'paper':>10s} {'diff':>8s}")
    for label, ours, conv, rep in rows:
        diff = f"{100 * (float(conv) - rep) / rep:+.2f}%" if rep else ""
        print(f"{label:12s} {ours:>10s} {conv:>12s} {rep if rep is not None else '-':>10} {diff:>8s}")
    print(f"(thop on our lean cross-attention, without the official half-discarded projections: {c.thop_raw_gflops:.2f} G)")
    print("ours: parameters in the forward pass; FLOPs = 2 x MACs of all matmuls and convolutions incl. attention.")
    print("paper conv.: thop 0.1.1 as the paper (2 x thop MACs; no attention matmuls, ConvTranspose counted 4x).")
    if c.model in NOTES:
        print("note:", NOTES[c.model])
    return 0
