"""``icmformer convert-official IN OUT``: official iCMFormer (isegm) checkpoint -> our safetensors format."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="official checkpoint (.pth, torch.save({'state_dict', 'config'}))")
    p.add_argument("dst", help="output .safetensors file")
    p.add_argument("--force", action="store_true", help="overwrite DST if it exists")


def run(args: argparse.Namespace) -> int:
    from icmformer.models.checkpoint import convert_official, read_metadata

    from icmformer.cli.errors import check_output_file

    dst = Path(args.dst)
    if dst.suffix != ".safetensors":
        raise ValueError(f"{dst}: the output must be a .safetensors file")
    if dst.exists() and not args.force:
        raise ValueError(f"{dst} exists; pass --force to overwrite it")
    check_output_file(dst, "DST", (".safetensors",))  # a writable folder, before reading SRC
    convert_official(args.src, dst)
    meta = read_metadata(dst)
    print(f"wrote {dst}: model {meta['model']} overrides {meta['overrides']}")
    return 0
