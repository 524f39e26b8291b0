"""``icmformer evaluate``: NoC/NoF/mIoU/SPC with the standard click simulation.

Examples::

    icmformer evaluate --checkpoint model.safetensors --datasets GrabCut,Berkeley,DAVIS --out runs/vitb
    icmformer evaluate --method grabcut --datasets GrabCut --limit 2 --out /tmp/gc
    icmformer evaluate --model icmformer_vit_tiny_224 --datasets GrabCut --limit 1 --max-clicks 3 --out /tmp/smoke
    icmformer evaluate --checkpoint model.safetensors --batch-size 16 --device cuda --out runs/vitb_b16

Writes ``records.jsonl`` (one line per instance, resumable), ``run.json`` and ``summary.json`` to
``--out`` and prints a table. ``--method grabcut`` needs neither torch nor a model.

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

from icmformer.evaluation.protocol import DEFAULT_PROTOCOL, EvalProtocol


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", choices=("model", "grabcut"), default="model", help="what to evaluate (default: model)")
    parser.add_argument("--checkpoint", help="model checkpoint (.safetensors of ours, or an official isegm .pth)")
    parser.add_argument("--model", help="a registry model: untrained (smoke tests) unless --pretrained or --checkpoint, e.g. icmformer_vit_tiny_224")
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
        "--fast", action="store_true",
        help="model, CPU: the opt-in fast mode (int8 dynamic quantisation of the Linear layers), to compare its NoC with exact mode",
    )
    parser.add_argument("--limit", type=int, help="only the first N images of each dataset (quick runs)")
    parser.add_argument("--no-resume", action="store_true", help="start over instead of resuming the records in --out")
    parser.add_argument("--grabcut-max-side", type=int, default=320, help="grabcut: working resolution, longer side (default: %(default)s)")
    parser.add_argument("--grabcut-iterations", type=int, default=2, help="grabcut: iterations per click (default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--max-image-pixels", type=int, metavar="N",
        help="refuse images above N pixels (width x height), checked from the header before decoding "
        "(default: $ICMFORMER_MAX_IMAGE_PIXELS or 40000000; 0: no limit)",
    )  # fmt: skip


def protocol_from_args(args: argparse.Namespace) -> EvalProtocol:
    """The evaluation protocol the flags describe (defaults: :data:`DEFAULT_PROTOCOL`)."""
    return DEFAULT_PROTOCOL.with_(
        max_clicks=args.max_clicks, stop_at_target=args.stop_at_target or None, zoom_in=not args.no_zoom_in,
        flip=not args.no_flip, target_size=args.target_size, davis_target_size=args.davis_target_size,
    )


def _grabcut(args):
    import cv2

    from icmformer.evaluation.baselines import GrabCutPredictFn
    from icmformer.utils import describe_device

    opts = dict(max_side=args.grabcut_max_side, iterations=args.grabcut_iterations)

    def factory(sample):
        return GrabCutPredictFn(sample.image, **opts)

    config = {"method": "grabcut", "grabcut": opts, "opencv": cv2.__version__}
    return factory, config, describe_device("cpu", f"OpenCV {cv2.__version__} grabCut")


UNTRAINED_SEED = 0  # --model NAME without weights: torch.manual_seed of the untrained weights (as predict)


def _model(args, names: list[str], protocol: EvalProtocol):
    import torch

    from icmformer.evaluation.batched import ModelMethod
    from icmformer.utils import describe_device
    from icmformer.models.factory import load_model

    if bool(args.checkpoint) == bool(args.model):
        raise ValueError("--method model needs exactly one of --checkpoint FILE or --model NAME")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    from icmformer.evaluation.records import weights_fingerprint

    with torch.random.fork_rng(devices=[]):  # untrained weights are seeded: a resumed run is the same model
        torch.manual_seed(UNTRAINED_SEED)
        model = load_model(args.checkpoint, args.model, pretrained=args.pretrained, device=device)
    if args.checkpoint:
        what = {"checkpoint": str(Path(args.checkpoint).resolve())}
    elif args.pretrained:
        what = {"model": args.model, "pretrained": str(model.checkpoint_path)}
    else:
        what = {"model": args.model, "untrained": True, "seed": UNTRAINED_SEED}
    # a resumed run must use the same weights (icmformer.evaluation.records checks it)
    what["weights_sha256"] = weights_fingerprint(model)
    if getattr(args, "fast", False):
        if device.type != "cpu":
            raise ValueError("--fast (int8 dynamic quantisation) runs on the CPU; use --device cpu")
        from icmformer.models.fast import quantize_int8

        model = quantize_int8(model)
        what["fast"] = "int8-dynamic"
    base = int(model.default_input_size)
    # ModelMethod(sample) is make_predict_fn(model, sample.image, ...) (the sequential path);
    # the runner uses its evaluate_items.
    factories = {n: ModelMethod(model, device=device, **protocol.predictor_options(n, base)) for n in names}
    config = {
        "method": "model",
        **what,
        "model_name": getattr(model, "name", None),
        "zoom_in": protocol.zoom_in,
        "flip": protocol.flip,
        "target_size": protocol.input_size(None, base),
        "davis_target_size": protocol.input_size("DAVIS", base),
    }
    return factories, config, describe_device(device)


def run(args: argparse.Namespace) -> int:
    from icmformer.data.datasets import get_dataset
    from icmformer.evaluation.runner import format_table, run_evaluation

    if args.max_image_pixels is not None:
        from icmformer.data.imageio import set_max_image_pixels

        set_max_image_pixels(args.max_image_pixels)
    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    if not names:
        raise ValueError("--datasets is empty; give e.g. GrabCut,Berkeley,DAVIS")
    if args.max_clicks < 1:
        raise ValueError(f"--max-clicks must be >= 1, got {args.max_clicks}")
    if args.pretrained and not args.model:
        raise ValueError("--pretrained needs --model NAME (the model whose shipped weights to load)")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.batch_size > 1 and args.method != "model":
        raise ValueError(f"--batch-size {args.batch_size} needs --method model (the {args.method} baseline runs one instance at a time)")
    protocol = protocol_from_args(args)
    readers = [get_dataset(n, args.data_root) for n in names]  # fail early on missing data
    out = Path(args.out or f"results/runs/evaluate_{args.method}")
    from icmformer.cli.errors import check_writable_dir

    check_writable_dir(out, "--out")  # ... and on an output folder that cannot be written
    names = [r.name for r in readers]
    if args.method == "grabcut":
        factory, config, device = _grabcut(args)
    else:
        factory, config, device = _model(args, names, protocol)
    summary = run_evaluation(
        readers, args.data_root, factory, out, resume=not args.no_resume, progress=not args.quiet, limit=args.limit,
        config=config, device=device, batch_size=args.batch_size, protocol=protocol,
    )
    print(format_table(summary))
    print(f"device: {summary['device']}; run time {summary['run_time_s']:.1f} s; records and summary in {out}")
    warn = sum(d.get("warnings", 0) for d in summary["datasets"].values())
    if warn:
        print(f"{warn} data warning(s); see summary.json")
    return 0
