"""Options several subcommands share."""
from __future__ import annotations

import argparse


def add_image_limit_argument(parser: argparse.ArgumentParser) -> None:
    """``--max-image-pixels N``: refuse larger images, checked from the file header."""
    parser.add_argument(
        "--max-image-pixels", type=int, metavar="N",
        help="refuse images above N pixels (width x height), read from the header before decoding "
        "(default: $ICMFORMER_MAX_IMAGE_PIXELS or 40000000; 0: no limit)",
    )  # fmt: skip


def apply_image_limit(args: argparse.Namespace) -> None:
    """Set the image reader's pixel limit from ``--max-image-pixels`` (when given)."""
    if getattr(args, "max_image_pixels", None) is not None:
        from icmformer.data.imageio import set_max_image_pixels

        set_max_image_pixels(args.max_image_pixels)
