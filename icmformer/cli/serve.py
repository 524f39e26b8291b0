"""``icmformer serve``: the HTTP interactor for CVAT and Label Studio (FastAPI + uvicorn, one process).

Examples::

    icmformer serve --checkpoint results/runs/vit/model.safetensors --port 8000
    icmformer serve --model icmformer_vit_demo_320 --pretrained --port 8000
    icmformer serve --onnx export/demo --port 8000          # onnxruntime, from icmformer export-onnx
    icmformer serve --model icmformer_vit_tiny_224 --port 0  # untrained smoke test on a free port

The model is loaded once; the first line on stdout is ``serving on http://HOST:PORT`` (with the
port actually bound, also for ``--port 0``). Endpoints and request formats: README ("Serve") and
:mod:`icmformer.deploy.server`.
"""
from __future__ import annotations

import argparse
import os
import socket
import sys
import warnings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", help="model checkpoint (.safetensors of ours, or an official isegm .pth)")
    parser.add_argument("--model", help="registry model name: untrained weights (prints a warning) unless --pretrained or --checkpoint")
    parser.add_argument("--pretrained", action="store_true", help="with --model: the weights shipped with the package")
    parser.add_argument("--onnx", metavar="DIR", help="serve an ONNX export (icmformer export-onnx --out DIR) with onnxruntime")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: %(default)s; 0: a free port)")
    parser.add_argument("--device", help="torch device (default: cpu)")
    parser.add_argument("--threads", type=int, help="CPU threads of the model (default: torch's choice)")
    parser.add_argument("--no-zoom-in", action="store_true", help="no zoom-in (whole image at the model's input size)")
    parser.add_argument("--no-flip", action="store_true", help="no horizontal-flip averaging")
    parser.add_argument("--target-size", type=int, help="network input side (default: the model's input size)")
    parser.add_argument("--max-image-pixels", type=int, default=16_000_000, metavar="N",
                        help="refuse images above N pixels (413), checked before decoding (default: %(default)s)")  # fmt: skip
    parser.add_argument("--max-images", type=int, default=8, help="decoded images + encodings kept, LRU (default: %(default)s)")
    parser.add_argument("--max-sessions", type=int, default=64, help="annotation sessions kept, LRU (default: %(default)s)")
    parser.add_argument("--history", type=int, default=4, help="probability maps kept per session (default: %(default)s)")
    parser.add_argument("--label-studio-from-name", help="Label Studio: BrushLabels name (default: from label_config, else 'tag')")
    parser.add_argument("--label-studio-to-name", help="Label Studio: Image name (default: from label_config, else 'image')")
    parser.add_argument("--label-studio-image-key", help="Label Studio: task.data field of the image (default: 'image')")
    parser.add_argument("--label-studio-url", default=os.environ.get("LABEL_STUDIO_URL"),
                        help="Label Studio: fetch task images given as URLs (/data/upload/...) from this instance, "
                        "e.g. http://localhost:8080 (default: $LABEL_STUDIO_URL; without it images must be inline)")
    parser.add_argument("--label-studio-api-key", default=os.environ.get("LABEL_STUDIO_API_KEY"),
                        help="Label Studio: API token sent with those fetches (default: $LABEL_STUDIO_API_KEY; "
                        "prefer the variable, a flag shows in the process list)")
    parser.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"])


def load_interactor(args: argparse.Namespace):
    """The :class:`Interactor` the arguments describe, and a description of the model for /health."""
    import torch

    from icmformer.deploy.service import Interactor

    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    sources = [x for x in (args.checkpoint, args.model, args.onnx) if x]
    if not sources:
        raise ValueError("give --checkpoint FILE, --model NAME [--pretrained] or --onnx DIR")
    if args.onnx and (args.checkpoint or args.model):
        raise ValueError("--onnx serves an export; do not combine it with --checkpoint / --model")
    if args.onnx:
        if args.device not in (None, "cpu"):
            raise ValueError("--onnx runs on the CPU (onnxruntime); drop --device")
        from icmformer.deploy.onnx_backend import OnnxBackend

        model = OnnxBackend(args.onnx, threads=args.threads)
        info = {"backend": "onnxruntime", "model": model.name, "onnx": str(args.onnx), "trained": bool(model.meta["source"].get("trained"))}
    else:
        from icmformer.interactive.io import UntrainedModelWarning, load_model

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UntrainedModelWarning)
            model = load_model(args.checkpoint, args.model, device=args.device, announce=False, pretrained=args.pretrained)
        trained = args.checkpoint is not None or args.pretrained
        if not trained:
            print(f"warning: --model {args.model} without --checkpoint/--pretrained: UNTRAINED weights, masks are meaningless",
                  file=sys.stderr)  # fmt: skip
        info = {"backend": "torch", "model": getattr(model, "name", None), "checkpoint": args.checkpoint, "trained": trained}
    interactor = Interactor(
        model, device=None if args.onnx else args.device, zoom_in=not args.no_zoom_in, flip=not args.no_flip,
        target_size=args.target_size, max_images=args.max_images, max_sessions=args.max_sessions, history=args.history,
        max_pixels=args.max_image_pixels,
    )  # fmt: skip
    info["input_size"] = interactor.core.target_size
    return interactor, info


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from icmformer.deploy.server import LabelStudioImages, create_app

    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be in 0..65535, got {args.port}")
    if args.max_image_pixels < 0:
        raise ValueError(f"--max-image-pixels must be >= 0 (0: no limit), got {args.max_image_pixels}")
    images = LabelStudioImages(args.label_studio_url, args.label_studio_api_key, max_bytes=max(args.max_image_pixels * 4, 2**20)
                               if args.max_image_pixels else 512 * 2**20)  # fmt: skip
    interactor, info = load_interactor(args)
    version = f"icmformer-{info['backend']}-{info.get('model')}"
    app = create_app(interactor, model_version=version, info=info,
                     label_studio_names=(args.label_studio_from_name, args.label_studio_to_name),
                     label_studio_image_key=args.label_studio_image_key, label_studio_images=images)  # fmt: skip
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as exc:
        raise ValueError(f"cannot bind {args.host}:{args.port}: {exc.strerror or exc}") from None
    sock.listen(128)
    port = sock.getsockname()[1]
    host = f"[{args.host}]" if family == socket.AF_INET6 else args.host
    print(f"serving on http://{host}:{port} ({info['backend']}, model {info.get('model')}, input {info['input_size']} px)", flush=True)
    config = uvicorn.Config(app, log_level=args.log_level, access_log=args.log_level in ("info", "debug"))
    uvicorn.Server(config).run(sockets=[sock])
    return 0
