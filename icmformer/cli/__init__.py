"""The ``icmformer`` command line.

Each subcommand lives in its own module of this package and exposes two functions:
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported only when their
subcommand runs, so ``icmformer --help`` stays fast and a broken optional dependency of one
subcommand does not break the others.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "flops": ("icmformer.cli.flops", "parameters and FLOPs of a model: ours and the paper's (thop) convention"),
    "convert-official": ("icmformer.cli.convert", "convert an official iCMFormer (isegm) checkpoint to our safetensors format"),
    "evaluate": ("icmformer.cli.evaluate", "NoC/NoF/mIoU/SPC evaluation with the standard click simulation"),
    "train": ("icmformer.cli.train", "iterative click training from a YAML config"),
    "validate": ("icmformer.cli.validate", "NoC of weights on a held-out training split (never the benchmarks), side by side"),
    "predict": ("icmformer.cli.predict", "segment one image from clicks given on the command line"),
    "bench": ("icmformer.cli.bench", "seconds per click: naive path vs optimised path, side by side"),
    "export-onnx": ("icmformer.cli.export_onnx", "export the model as two ONNX graphs (image encoder, click decoder) + JSON"),
    "serve": ("icmformer.cli.serve", "HTTP interactor for CVAT and Label Studio (FastAPI + uvicorn)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="icmformer",
        description="iCMFormer: interactive segmentation with cross-modality vision transformers.",
        epilog="Errors in the input are reported in one line (exit status 1); add --debug to see the traceback.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_module, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # --debug (anywhere) or ICMFORMER_DEBUG=1: show the traceback of user errors too
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    if not argv or argv[0] in {"-h", "--help"} or argv[0] not in SUBCOMMANDS:
        if argv and argv[0] not in {"-h", "--help"}:
            parser.error(f"unknown command {argv[0]!r}; choose from {', '.join(SUBCOMMANDS)}")
        parser.print_help()
        return 0 if argv else 2
    name = argv[0]
    module = importlib.import_module(SUBCOMMANDS[name][0])
    sub = argparse.ArgumentParser(prog=f"icmformer {name}", description=SUBCOMMANDS[name][1])
    module.add_arguments(sub)
    args = sub.parse_args(argv[1:])
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        # Bad input (files, checkpoints, JSON, disks, permissions, values): one line, exit 1,
        # no traceback (icmformer.cli.errors); anything else is a bug and keeps its traceback.
        import os

        from icmformer.cli.errors import EXIT_USER_ERROR, user_error

        message = user_error(exc)
        if message is None or debug or os.environ.get("ICMFORMER_DEBUG"):
            raise
        print(f"icmformer {name}: error: {message}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
