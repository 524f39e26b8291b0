"""``icmformer predict``: segment one object of one image from clicks given on the command line.

Examples::

    icmformer predict --image cat.jpg --click 120,200,+ --out cat_mask.png   # the shipped demo model
    icmformer predict --checkpoint model.safetensors --image cat.jpg --click 120,200,+ --click 40,10,- --out cat_mask.png
    icmformer predict --checkpoint model.safetensors --image cat.jpg --clicks cat_clicks.json --object 2 --out m.png --prob-out p.npy
    icmformer predict --model NAME --pretrained --image cat.jpg --click 120,200,+ --out m.png   # shipped weights
    icmformer predict --model icmformer_vit_tiny_224 --image cat.jpg --click 120,200,+ --out m.png   # untrained: smoke test

Clicks are ``Y,X,+`` (positive) or ``Y,X,-`` (negative): row and column in pixels of the image,
applied in order as a user would click (each prediction feeds the next). ``--clicks`` reads a
click file written by the annotation notebook (``*_clicks.json``; ``--object`` picks the object,
1-based) or a JSON list of ``[y, x, positive]``. The mask is written as a PNG with 0/255;
``--prob-out`` writes the probability map (``.npy``: float32; otherwise an 8-bit PNG).
Existing outputs are kept unless ``--force``.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

from icmformer.cli.common import add_image_limit_argument, apply_image_limit


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", help="model checkpoint (.safetensors of ours, or an official isegm .pth)")
    parser.add_argument("--model", help="registry model name: untrained weights (prints a warning) unless --pretrained or --checkpoint is given too; default (no --checkpoint): the shipped demo model icmformer_vit_demo_320 with its weights")
    parser.add_argument("--pretrained", action="store_true", help="with --model: the weights shipped with the package")
    parser.add_argument("--image", required=True, help="the image file")
    parser.add_argument("--click", action="append", default=[], metavar="Y,X,+|-", help="a click: row, column, + or - (repeat, in order)")
    parser.add_argument("--clicks", metavar="JSON", help="clicks from a JSON file (a click file of the annotation notebook, or a list of [y, x, positive])")
    parser.add_argument("--object", type=int, default=1, metavar="ID", help="with --clicks: the object of a click file (1-based, default: %(default)s)")
    parser.add_argument("--out", required=True, help="output mask PNG (0 = background, 255 = object)")
    parser.add_argument("--prob-out", help="also write the probability map (.npy float32, or an 8-bit PNG)")
    parser.add_argument("--no-zoom-in", action="store_true", help="no zoom-in (whole image at the model's input size)")
    parser.add_argument("--no-flip", action="store_true", help="no horizontal-flip averaging")
    parser.add_argument("--target-size", type=int, help="network input side (default: the model's input size)")
    parser.add_argument("--device", help="torch device (default: cpu)")
    parser.add_argument("--force", action="store_true", help="overwrite existing output files")
    add_image_limit_argument(parser)


def _clicks(args) -> list:
    from icmformer.interactive.io import parse_click, parse_objects, read_clicks_file

    if args.clicks and args.click:
        raise ValueError("give clicks either with --click or with --clicks FILE, not both")
    if args.clicks:
        objects = parse_objects(read_clicks_file(args.clicks))
        if not 1 <= args.object <= len(objects):
            raise ValueError(f"--object {args.object}: {args.clicks} has {len(objects)} object(s) (ids 1..{len(objects)})")
        clicks = objects[args.object - 1]
        if not clicks:
            raise ValueError(f"{args.clicks}: object {args.object} has no click")
        return clicks
    if not args.click:
        raise ValueError("no clicks: give at least one --click Y,X,+ (or --clicks FILE)")
    return [parse_click(text, i, f"--click {text!r}") for i, text in enumerate(args.click)]


MASK_OUTPUTS = (".png", ".bmp", ".tif", ".tiff")  # lossless: a JPEG mask would not be 0/255
PROB_OUTPUTS = (".npy",) + MASK_OUTPUTS


def _check_output(path: Path, force: bool, what: str) -> None:
    # before the image is read and the model runs: known type, not a folder, writable folder
    from icmformer.cli.errors import check_output_file

    check_output_file(path, what, MASK_OUTPUTS if what == "--out" else PROB_OUTPUTS, force=force)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image

    from icmformer.data.datasets import read_image
    from icmformer.interactive.io import UntrainedModelWarning, check_clicks_inside, load_model

    if not args.checkpoint and not args.model:
        from icmformer.models.factory import DEFAULT_PRETRAINED_MODEL

        # neither given: the shipped demo model, so a fresh install segments out of the box
        args.model, args.pretrained = DEFAULT_PRETRAINED_MODEL, True
    if args.pretrained and args.checkpoint:
        raise ValueError("--pretrained loads the weights shipped with the package: give it without --checkpoint")
    clicks = _clicks(args)
    out = Path(args.out)
    prob_out = Path(args.prob_out) if args.prob_out else None
    _check_output(out, args.force, "--out")
    if prob_out is not None:
        if prob_out.resolve() == out.resolve():
            raise ValueError("--prob-out must differ from --out")
        _check_output(prob_out, args.force, "--prob-out")
    apply_image_limit(args)
    image = read_image(args.image)
    check_clicks_inside(clicks, image.shape[:2], "click")
    if args.checkpoint and not Path(args.checkpoint).is_file():
        raise FileNotFoundError(f"checkpoint not found: {args.checkpoint}")

    from icmformer.evaluation.predictor import Predictor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedModelWarning)  # said below, in one line
        model = load_model(args.checkpoint, args.model, device=args.device, announce=False, pretrained=args.pretrained)
    if args.checkpoint is None and not args.pretrained:
        print(f"warning: --model {args.model} without --checkpoint: UNTRAINED weights, the mask is meaningless", file=sys.stderr)
    predictor = Predictor(model, zoom_in=not args.no_zoom_in, flip=not args.no_flip, target_size=args.target_size)
    t0 = time.perf_counter()
    predictor.set_image(image)
    latencies = []
    for c in clicks:
        mask, prob = predictor.add_click(c.coords[0], c.coords[1], c.is_positive)
        latencies.append(predictor.last_latency_s)
    total = time.perf_counter() - t0

    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * 255).save(out)
    if prob_out is not None:
        prob_out.parent.mkdir(parents=True, exist_ok=True)
        if prob_out.suffix.lower() == ".npy":
            np.save(prob_out, prob.astype(np.float32))
        else:
            Image.fromarray((np.clip(prob, 0, 1) * 255 + 0.5).astype(np.uint8)).save(prob_out)
    h, w = image.shape[:2]
    npos = sum(c.is_positive for c in clicks)
    print(
        f"{args.image}: {h}x{w}, {len(clicks)} clicks ({npos}+ {len(clicks) - npos}-), mask {int(mask.sum())} px "
        f"({100.0 * mask.mean():.1f}%), {total:.2f} s ({1000 * sum(latencies) / len(latencies):.0f} ms/click) -> {out}"
        + (f", {prob_out}" if prob_out is not None else "")
    )
    return 0
