"""Stand-in backbone weight files in the exact upstream layouts, for smoke runs without downloads.

The paper profile starts from MAE's ``mae_pretrain_vit_base.pth`` and Microsoft's ImageNet Swin
checkpoints (``swin_base_patch4_window12_384_22k.pth``, ``swin_small_patch4_window7_224.pth``).
Those files cannot be downloaded here, so the ``paper-smoke`` profile writes files with the same
container (``{'model': state_dict}``), the same key names, shapes and dtypes, and random values:
the loading code then meets exactly what it will meet with the real files.

- MAE (``models_mae`` encoder as released for fine-tuning): ``cls_token``, ``pos_embed``
  (1 x (1 + 14*14) x C, the cls row first), ``patch_embed.proj.*``, ``blocks.<i>.{norm1, attn.qkv,
  attn.proj, norm2, mlp.fc1, mlp.fc2}.*``, ``norm.*``.
- Swin (Microsoft's release): ``patch_embed.{proj, norm}.*``; per stage ``layers.<s>.blocks.<b>.
  {norm1, attn.relative_position_bias_table, attn.relative_position_index, attn.qkv, attn.proj,
  norm2, mlp.fc1, mlp.fc2}``, ``attn_mask`` buffers in the shifted blocks, the patch merging at the
  *end* of stages 0-2 (``layers.<s>.downsample.{reduction.weight, norm.*}``), ``norm.*`` and the
  classifier ``head.*`` (1000 classes, 21841 for the 22k files).

``python -m icmformer.pipeline.weights DIR NAME [NAME ...]`` writes the named files into DIR
(existing files are kept); ``--list`` prints the known names.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

#: file name -> (kind, spec) of the upstream checkpoints the paper configs name
UPSTREAM = {
    "mae_pretrain_vit_base.pth": ("mae", {"dim": 768, "depth": 12, "patch": 16, "img": 224}),
    "mae_pretrain_vit_large.pth": ("mae", {"dim": 1024, "depth": 24, "patch": 16, "img": 224}),
    "mae_pretrain_vit_huge.pth": ("mae", {"dim": 1280, "depth": 32, "patch": 14, "img": 224}),
    "swin_base_patch4_window12_384_22k.pth": (
        "swin", {"dim": 128, "depths": (2, 2, 18, 2), "heads": (4, 8, 16, 32), "window": 12, "img": 384, "classes": 21841}),
    "swin_small_patch4_window7_224.pth": (
        "swin", {"dim": 96, "depths": (2, 2, 18, 2), "heads": (3, 6, 12, 24), "window": 7, "img": 224, "classes": 1000}),
}  # fmt: skip


def _linear(sd: dict, name: str, fan_in: int, fan_out: int, g: torch.Generator, bias: bool = True) -> None:
    sd[f"{name}.weight"] = torch.randn(fan_out, fan_in, generator=g) * 0.02
    if bias:
        sd[f"{name}.bias"] = torch.randn(fan_out, generator=g) * 0.02


def _norm(sd: dict, name: str, dim: int, g: torch.Generator) -> None:
    sd[f"{name}.weight"] = 1 + torch.randn(dim, generator=g) * 0.02
    sd[f"{name}.bias"] = torch.randn(dim, generator=g) * 0.02


def mae_state_dict(dim: int, depth: int, patch: int, img: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """The encoder state dict of MAE's released ``mae_pretrain_vit_*.pth`` (random values)."""
    g = torch.Generator().manual_seed(seed)
    grid = img // patch
    sd = {
        "cls_token": torch.randn(1, 1, dim, generator=g) * 0.02,
        "pos_embed": torch.randn(1, 1 + grid * grid, dim, generator=g) * 0.02,
        "patch_embed.proj.weight": torch.randn(dim, 3, patch, patch, generator=g) * 0.02,
        "patch_embed.proj.bias": torch.randn(dim, generator=g) * 0.02,
    }
    for i in range(depth):
        b = f"blocks.{i}"
        _norm(sd, f"{b}.norm1", dim, g)
        _linear(sd, f"{b}.attn.qkv", dim, 3 * dim, g)
        _linear(sd, f"{b}.attn.proj", dim, dim, g)
        _norm(sd, f"{b}.norm2", dim, g)
        _linear(sd, f"{b}.mlp.fc1", dim, 4 * dim, g)
        _linear(sd, f"{b}.mlp.fc2", 4 * dim, dim, g)
    _norm(sd, "norm", dim, g)
    return sd


def relative_position_index(window: int) -> torch.Tensor:
    """Swin's ``relative_position_index`` buffer (window^2 x window^2, int64)."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


def swin_state_dict(dim: int, depths, heads, window: int, img: int, classes: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """The state dict of Microsoft's released Swin ImageNet checkpoints (random values)."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    sd["patch_embed.proj.weight"] = torch.randn(dim, 3, 4, 4, generator=g) * 0.02
    sd["patch_embed.proj.bias"] = torch.randn(dim, generator=g) * 0.02
    _norm(sd, "patch_embed.norm", dim, g)
    res = img // 4
    for s, (depth, nh) in enumerate(zip(depths, heads)):
        c = dim * 2**s
        w = min(window, res)  # a stage no larger than the window: one window, no shift
        shift = 0 if res <= window else window // 2
        for b in range(depth):
            p = f"layers.{s}.blocks.{b}"
            _norm(sd, f"{p}.norm1", c, g)
            sd[f"{p}.attn.relative_position_bias_table"] = torch.randn((2 * w - 1) ** 2, nh, generator=g) * 0.02
            sd[f"{p}.attn.relative_position_index"] = relative_position_index(w)
            _linear(sd, f"{p}.attn.qkv", c, 3 * c, g)
            _linear(sd, f"{p}.attn.proj", c, c, g)
            _norm(sd, f"{p}.norm2", c, g)
            _linear(sd, f"{p}.mlp.fc1", c, 4 * c, g)
            _linear(sd, f"{p}.mlp.fc2", 4 * c, c, g)
            if b % 2 == 1 and shift > 0:
                sd[f"{p}.attn_mask"] = torch.zeros((res // w) ** 2, w * w, w * w)
        if s < len(depths) - 1:
            sd[f"layers.{s}.downsample.reduction.weight"] = torch.randn(2 * c, 4 * c, generator=g) * 0.02
            _norm(sd, f"layers.{s}.downsample.norm", 4 * c, g)
            res //= 2
    last = dim * 2 ** (len(depths) - 1)
    _norm(sd, "norm", last, g)
    _linear(sd, "head", last, classes, g)
    return sd


def upstream_state_dict(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    if name not in UPSTREAM:
        raise ValueError(f"unknown upstream weights file {name!r}; known: {', '.join(UPSTREAM)}")
    kind, spec = UPSTREAM[name]
    return mae_state_dict(**spec, seed=seed) if kind == "mae" else swin_state_dict(**spec, seed=seed)


def write_upstream_weights(directory: str | Path, names, seed: int = 0, overwrite: bool = False) -> list[Path]:
    """Write each named file as ``{'model': state_dict}`` into ``directory``; returns the paths written."""
    names = [n for n in names if n]
    unknown = [n for n in names if n not in UPSTREAM]
    if unknown:
        raise ValueError(f"unknown upstream weights file(s) {unknown}; known: {', '.join(UPSTREAM)}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names:
        path = directory / name
        if path.exists() and not overwrite:
            continue
        tmp = path.with_name(path.name + ".tmp")
        torch.save({"model": upstream_state_dict(name, seed)}, tmp)
        tmp.replace(path)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m icmformer.pipeline.weights", description=__doc__.splitlines()[0])
    ap.add_argument("directory", nargs="?", help="where to write the files (e.g. data/weights)")
    ap.add_argument("names", nargs="*", help="file names, e.g. mae_pretrain_vit_base.pth")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--list", action="store_true", help="print the known file names")
    args = ap.parse_args(argv)
    if args.list:
        print("\n".join(UPSTREAM))
        return 0
    if not args.directory or not args.names:
        print("error: give a directory and at least one file name (--list shows the names)", file=sys.stderr)
        return 2
    try:
        written = write_upstream_weights(args.directory, args.names, args.seed)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for p in written:
        print(f"wrote {p} (random values, upstream layout)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
