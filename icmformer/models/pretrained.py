"""Pretrained backbone weights from a local file.

- ViT: MAE pre-training checkpoints (``mae_pretrain_vit_base.pth``, ``{'model': state_dict}``) or
  timm ViT files (``.pth``/``.bin``/``.safetensors``). Used: ``patch_embed.*``, ``blocks.*``,
  ``pos_embed`` (the cls row dropped, bicubically resized to the model's token grid). Ignored:
  ``cls_token``, norms/heads of the classifier, the MAE decoder. The cross blocks, the click
  embedding, the neck and the head keep their initialisation (as the official training).
- Swin: ImageNet checkpoints in the original Swin layout or timm's; relative-position tables are
  resized where the window differs (timm's ``checkpoint_filter_fn``). Used: ``patch_embed.*``,
  ``layers.*``; ignored: the classifier and the final norm.

Where to get the files: ``data/README.md``. A missing file, or one whose shapes do not fit the
model, raises an error that names the file and the expected model.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from icmformer.models.vit import resize_pos_embed

SOURCES = {
    "vit": "MAE ViT weights, e.g. https://dl.fbaipublicfiles.com/mae/pretrain/mae_pretrain_vit_base.pth (ViT-B), "
    "mae_pretrain_vit_large.pth, mae_pretrain_vit_huge.pth",
    "swin": "ImageNet Swin weights, e.g. swin_base_patch4_window12_384_22k.pth / swin_small_patch4_window7_224.pth "
    "from https://github.com/microsoft/Swin-Transformer (or timm's swin_*.safetensors)",
}


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from icmformer.models.checkpoint import read_state

        state = read_state(path)  # one-line ValueError for a corrupt file
    else:
        from icmformer.safe_pickle import load_torch

        # weights_only first, then the exact allowlist; one-line errors that never advise weights_only=False
        state = load_torch(path, "pretrained weights")
    for key in ("model", "state_dict", "module"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    return {k.removeprefix("module.").removeprefix("backbone."): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def load_pretrained_backbone(model: nn.Module, path: str | Path) -> dict[str, list[str]]:
    """Initialise ``model.backbone`` from ``path``; returns ``{"loaded": [...], "ignored": [...]}``."""
    path = Path(path)
    cfg = model.config
    name = getattr(model, "name", None) or "the model"
    if not path.is_file():
        raise FileNotFoundError(
            f"pretrained backbone weights not found: {path} (expected for {name}: {SOURCES[cfg.backbone]}; "
            "put the file under data/weights/, see data/README.md)"
        )
    state = read_state_dict(path)
    backbone = model.backbone
    own = backbone.state_dict()
    if cfg.backbone == "vit":
        mapped, ignored = {}, []
        for k, v in state.items():
            if re.match(r"^(patch_embed\.proj\.|blocks\.\d+\.)", k):
                mapped[k] = v
            elif k == "pos_embed":
                n = v.shape[1]
                side = int(round(n**0.5))
                if side * side != n:
                    v, side = v[:, 1:], int(round((n - 1) ** 0.5))
                mapped[k] = resize_pos_embed(v, (side, side), backbone.grid)
            else:
                ignored.append(k)
        expected = [k for k in own if k.startswith(("patch_embed.proj.", "blocks.")) or k == "pos_embed"]
    else:
        from timm.models.swin_transformer import checkpoint_filter_fn

        state = {k: v for k, v in state.items() if not k.startswith(("head", "norm.")) and k != "norm"}
        try:
            filtered = checkpoint_filter_fn(state, backbone)
        except Exception as exc:
            raise ValueError(f"{path}: cannot map these weights onto the Swin backbone of {name} ({exc})") from exc
        mapped = {k: v for k, v in filtered.items() if k.startswith(("patch_embed.", "layers."))}
        ignored = [k for k in filtered if k not in mapped]
        expected = [k for k in own if k.startswith(("patch_embed.", "layers."))]
    missing = [k for k in expected if k not in mapped]
    unexpected = [k for k in mapped if k not in own]
    shapes = [f"{k}: file {tuple(mapped[k].shape)} vs model {tuple(own[k].shape)}" for k in mapped if k in own and mapped[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        detail = []
        if missing:
            detail.append(f"missing {len(missing)} (e.g. {', '.join(missing[:3])})")
        if unexpected:
            detail.append(f"unexpected {len(unexpected)} (e.g. {', '.join(unexpected[:3])})")
        if shapes:
            detail.append(f"mis-shaped {len(shapes)} (e.g. {'; '.join(shapes[:3])})")
        raise ValueError(
            f"{path} does not fit the {cfg.backbone.upper()} backbone of {name} "
            f"(embed_dim={cfg.embed_dim}, {'depth=' + str(cfg.depth) if cfg.backbone == 'vit' else 'depths=' + str(cfg.depths)}): "
            + "; ".join(detail) + f". Expected: {SOURCES[cfg.backbone]}"
        )
    backbone.load_state_dict(mapped, strict=False)
    return {"loaded": sorted(mapped), "ignored": sorted(ignored)}
