"""``icmformer train``: iterative click training from a YAML config.

Examples::

    icmformer train --config configs/demo.yaml
    icmformer train --config configs/demo.yaml max_steps=20 optim.lr=3e-4 --output-dir /tmp/run
    icmformer train --config configs/demo.yaml --output-dir /tmp/run --resume     # continue a run
    icmformer train --config configs/demo.yaml --output-dir /tmp/run --resume-if-exists  # continue or start
    torchrun --nproc_per_node 4 -m icmformer.cli train --config configs/paper_vit_base_448_cocolvis.yaml

Writes to the output folder (``output_dir`` of the config, or ``--output-dir``): ``config.yaml``
(the resolved config), ``checkpoints/last.pt`` (training state for ``--resume``),
``model.safetensors`` (final weights, ``icmformer.load_checkpoint``), ``train_summary.json`` and
``dvclive/`` (step-wise ``train/loss``, ``train/iou``, ``train/lr``).
"""
from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="FILE", help="YAML training config (see configs/)")
    parser.add_argument(
        "overrides", nargs="*", default=[], metavar="KEY=VALUE",
        help="config overrides, e.g. optim.lr=1e-4 data.augment.crop_size=[224,224] max_steps=10",
    )  # fmt: skip
    parser.add_argument("--output-dir", metavar="DIR", help="output folder (overrides the config's output_dir)")
    parser.add_argument("--resume", action="store_true", help="continue from <output_dir>/checkpoints/last.pt")
    parser.add_argument(
        "--resume-if-exists", action="store_true",
        help="continue from <output_dir>/checkpoints/last.pt if it exists, else start a new run (pipeline stages: a killed stage goes on where it stopped)",
    )  # fmt: skip
    parser.add_argument(
        "--save-every-steps", type=int, default=0, metavar="N",
        help="also write the training state every N optimiser steps (default: only per checkpoint_interval epochs and at the end)",
    )  # fmt: skip
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no log lines")
    # overrides may come before, between and after the options (`KEY=V --quiet KEY=V`): plain
    # parse_args stops collecting the positional list at the first option
    parser.parse_args = parser.parse_intermixed_args  # type: ignore[method-assign]


def run(args: argparse.Namespace) -> int:
    from icmformer.training.config import load_config
    from icmformer.training.trainer import SUMMARY_FILE, Trainer

    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        raise ValueError(f"override {bad[0]!r} must have the form section.key=value")
    cfg = load_config(args.config, list(args.overrides))
    if args.output_dir:
        cfg.output_dir = str(args.output_dir)
    from icmformer.cli.errors import check_writable_dir

    check_writable_dir(cfg.output_dir, "--output-dir" if args.output_dir else "output_dir")  # before data and model
    resume = True if args.resume else "if_exists" if args.resume_if_exists else False
    trainer = Trainer(
        cfg, resume=resume, progress=not args.quiet, quiet=args.quiet, save_every_steps=args.save_every_steps,
    )  # fmt: skip
    summary = trainer.fit()
    if summary.get("already_finished"):
        if trainer.info.is_main:
            print(
                f"run in {trainer.output_dir} already finished (step {trainer.state.step}, epoch "
                f"{trainer.state.epoch}/{cfg.schedule.epochs}, max_steps {cfg.max_steps or 'none'}); nothing to do. "
                "Raise max_steps or schedule.epochs to train further.",
                file=sys.stdout,
            )
        return 0
    if trainer.info.is_main and not args.quiet:
        print(f"summary: {trainer.output_dir / SUMMARY_FILE}")
    return 0
