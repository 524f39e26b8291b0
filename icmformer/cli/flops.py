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


def check_override_types(model: str, overrides: dict) -> None:
    """``ValueError`` naming the key when an override's type does not fit the config field
    (e.g. ``embed_dim=abc``); unknown keys and values are checked by the model config itself."""
    import dataclasses

    from icmformer.models.registry import MODEL_CONFIGS

    if model not in MODEL_CONFIGS:
        return
    defaults = {f.name: getattr(MODEL_CONFIGS[model], f.name) for f in dataclasses.fields(MODEL_CONFIGS[model])}
    for key, value in overrides.items():
        if key not in defaults or defaults[key] is None or value is None:
            continue
        default = defaults[key]
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        elif isinstance(default, (tuple, list)):
            ok = isinstance(value, (tuple, list))
        elif isinstance(default, str):
            ok = isinstance(value, str)
        else:
            ok = True
        if not ok:
            raise ValueError(f"--set {key}={value!r}: expected {type(default).__name__} like the default {default!r}")


def run(args: argparse.Namespace) -> int:
    from icmformer.models.complexity import complexity

    if args.size and min(args.size) < 1:
        raise ValueError(f"--size H W must be positive, got {args.size[0]} {args.size[1]}")
    overrides = parse_overrides(args.set)
    check_override_types(args.model, overrides)
    c = complexity(args.model, tuple(args.size) if args.size else None, **overrides)
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
