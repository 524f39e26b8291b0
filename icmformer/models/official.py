"""Official iCMFormer (isegm) checkpoints: reading, key mapping both ways, architecture inference.

Official checkpoints are ``torch.save({'state_dict': ..., 'config': {...}})`` files of the isegm
code base. They are read with ``weights_only=True`` where possible, otherwise with the exact
allowlist of :mod:`icmformer.safe_pickle` (tensors, numpy arrays, plain containers); the isegm
config objects become inert placeholders and any other global is refused, so no code from the
file runs. Key mapping
(OFFICIAL.md §1d):

==========================================  ===============================================
official                                    ours
==========================================  ===============================================
``patch_embed_coords.*`` (ViT)              ``backbone.click_embed.*``
``backbone.pos_embed`` (1, 1+N, C)          ``backbone.pos_embed`` (1, N, C): cls row dropped
``backbone.blocks2.{i}.attnK.qkv``          ``backbone.cross_blocks.{i}.attnK.q`` (rows [:C]) and ``.kv`` (rows [C:])
``backbone.blocks2.{i}.*`` (norms, mlp)     ``backbone.cross_blocks.{i}.*``
``backbone.layers.{i}.downsample`` (Swin)   ``backbone.layers.{i+1}.downsample`` (timm layout)
unused: ``backbone.cls_token``, ``backbone.fc_norm``, ``backbone.head``, ``head.up_conv1/2``,
``backbone.patch_embed_coords`` (Swin), ``*.relative_position_index`` (buffers): dropped
==========================================  ===============================================
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from icmformer.models.checkpoint import existing_file as _existing

_OFFICIAL_UNUSED = re.compile(
    r"^(backbone\.cls_token|backbone\.fc_norm\..*|backbone\.head\..*|head\.up_conv[12]\..*|"
    r"backbone\.patch_embed_coords\..*|.*relative_position_index|.*attn_mask)$"
)


def read_official(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read an official checkpoint -> (state dict, config dict or {})."""
    from icmformer.safe_pickle import load_torch

    path = _existing(path)
    # weights_only=True first; isegm config objects become inert placeholders, every other
    # global outside the exact allowlist of icmformer.safe_pickle is refused (nothing runs)
    obj = load_torch(path, "official checkpoint", placeholders=True)
    if isinstance(obj, dict) and "state_dict" in obj:
        state, config = obj["state_dict"], obj.get("config") or {}
    elif isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state, config = obj, {}
    else:
        raise ValueError(f"{path}: not an iCMFormer checkpoint (expected a dict with 'state_dict')")
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}, config if isinstance(config, dict) else {}


def _shift_downsample(key: str, offset: int) -> str:
    """Swin patch merging: the official layout keeps it at the end of stage ``i``, timm's at the
    start of stage ``i + 1``; other keys are returned as they are."""
    m = re.match(r"^backbone\.layers\.(\d+)\.downsample\.(.*)$", key)
    return key if m is None else f"backbone.layers.{int(m.group(1)) + offset}.downsample.{m.group(2)}"


def _split_qkv(out: dict, prefix: str, key: str, tensor: torch.Tensor) -> None:
    dim = tensor.shape[0] // 3
    out[f"{prefix}.q.{key}"] = tensor[:dim].clone()
    out[f"{prefix}.kv.{key}"] = tensor[dim:].clone()


def convert_official_state_dict(state: dict[str, torch.Tensor], model: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """Official (isegm) key names and layouts -> ours (see the module docstring)."""
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if _OFFICIAL_UNUSED.match(k):
            continue
        if k.startswith("patch_embed_coords."):
            out["backbone.click_embed." + k[len("patch_embed_coords."):]] = v
            continue
        if k == "backbone.pos_embed":
            n = v.shape[1]
            side = int(round((n - 1) ** 0.5))
            out[k] = v[:, 1:] if side * side == n - 1 else v
            continue
        m = re.match(r"^backbone\.blocks2\.(\d+)\.(.*)$", k)
        if m:
            idx, rest = m.groups()
            prefix = f"backbone.cross_blocks.{idx}"
            q = re.match(r"^(attn[12])\.qkv\.(weight|bias)$", rest)
            if q:
                _split_qkv(out, f"{prefix}.{q.group(1)}", q.group(2), v)
            else:
                out[f"{prefix}.{rest}"] = v
            continue
        out[_shift_downsample(k, +1)] = v
    return out


def to_official_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Ours -> the official layout (inverse of :func:`convert_official_state_dict`).

    Keys the official model has but never uses (cls token, classifier, ``fc_norm``, the x2/x4
    up-convs, Swin's unused click patch embedding) are filled with zeros of the official shapes
    and the cls row of the position embedding with zeros, so the result loads with the official
    ``strict=True`` loader.
    """
    cfg = model.config
    out: dict[str, torch.Tensor] = {}
    for k, v in model.state_dict().items():
        if k.startswith("backbone.click_embed."):
            if cfg.backbone == "vit":
                out["patch_embed_coords." + k[len("backbone.click_embed."):]] = v
            else:
                raise ValueError("the image-only Swin variants (X,XY / X,YX) have no official counterpart")
            continue
        if k == "backbone.pos_embed":
            out[k] = torch.cat([torch.zeros_like(v[:, :1]), v], dim=1)
            continue
        m = re.match(r"^backbone\.cross_blocks\.(\d+)\.(attn[12])\.(q|kv)\.(weight|bias)$", k)
        if m:
            idx, attn, part, kind = m.groups()
            if part == "q":
                kv = model.state_dict()[f"backbone.cross_blocks.{idx}.{attn}.kv.{kind}"]
                out[f"backbone.blocks2.{idx}.{attn}.qkv.{kind}"] = torch.cat([v, kv], dim=0)
            continue
        if k.startswith("backbone.cross_blocks."):
            out["backbone.blocks2." + k[len("backbone.cross_blocks."):]] = v
            continue
        out[_shift_downsample(k, -1)] = v
    dim, ch = cfg.embed_dim, cfg.head_channels
    zeros = {}
    if cfg.backbone == "vit":
        zeros.update({"backbone.cls_token": (1, 1, dim), "backbone.fc_norm.weight": (dim,), "backbone.fc_norm.bias": (dim,),
                      "backbone.head.weight": (1000, dim), "backbone.head.bias": (1000,)})  # fmt: skip
    else:
        p = cfg.patch_size
        zeros.update({"backbone.patch_embed_coords.proj.weight": (dim, 3, p, p), "backbone.patch_embed_coords.proj.bias": (dim,),
                      "backbone.patch_embed_coords.norm.weight": (dim,), "backbone.patch_embed_coords.norm.bias": (dim,)})  # fmt: skip
    for i, (cin, cout) in enumerate(((ch, ch // 2), (ch // 2, ch // 4)), start=1):
        zeros.update({f"head.up_conv{i}.0.weight": (cin, cout, 2, 2), f"head.up_conv{i}.0.bias": (cout,),
                      f"head.up_conv{i}.1.weight": (cout,), f"head.up_conv{i}.1.bias": (cout,),
                      f"head.up_conv{i}.2.weight": (cout, cout, 1, 1), f"head.up_conv{i}.2.bias": (cout,),
                      f"head.up_conv{i}.3.weight": (cout,), f"head.up_conv{i}.3.bias": (cout,)})  # fmt: skip
    for k, shape in zeros.items():
        out[k] = torch.zeros(shape)
    return out


def infer_official_architecture(state: dict[str, torch.Tensor], config: dict | None = None) -> tuple[str, dict[str, Any]]:
    """Registry name + overrides that reproduce the architecture of an official state dict."""
    from icmformer.models.registry import MODEL_CONFIGS

    def count(pattern: str) -> int:
        idx = {int(m.group(1)) for k in state for m in [re.match(pattern, k)] if m}
        return max(idx) + 1 if idx else 0

    params = (config or {}).get("params", {}) if isinstance(config, dict) else {}
    bparams = params.get("backbone_params", {}) if isinstance(params, dict) else {}
    head_ch = state["head.convs.0.conv.weight"].shape[0] if "head.convs.0.conv.weight" in state else None
    n_cross = count(r"^backbone\.blocks2\.(\d+)\.")
    if "patch_embed_coords.proj.weight" in state:
        w = state["backbone.patch_embed.proj.weight"]
        dim, patch = w.shape[0], w.shape[-1]
        depth = count(r"^backbone\.blocks\.(\d+)\.")
        grid = int(round((state["backbone.pos_embed"].shape[1] - 1) ** 0.5))
        # Head counts do not show in weight shapes: take the config's, else the official value.
        heads = int(bparams.get("num_heads") or {768: 12, 1024: 16, 1280: 16}.get(dim, max(1, dim // 64)))
        neck = tuple(state[f"neck.{k}"].shape[0] for k in ("down_4.5.weight", "down_8.2.weight", "down_16.0.weight", "down_32.2.weight"))
        ov = dict(embed_dim=dim, patch_size=patch, depth=depth, num_heads=heads, img_size=grid * patch,
                  window_size=224 // patch, num_cross_blocks=n_cross, cross_modality=n_cross > 0, neck_dims=neck,
                  head_channels=head_ch)  # fmt: skip
        base = {768: "icmformer_vit_base_448", 1024: "icmformer_vit_large_448", 1280: "icmformer_vit_huge_448"}.get(dim, "icmformer_vit_base_448")
    elif "backbone.layers.0.blocks.0.attn.relative_position_bias_table" in state:
        dim = state["backbone.patch_embed.proj.weight"].shape[0]
        depths = tuple(count(rf"^backbone\.layers\.{i}\.blocks\.(\d+)\.") for i in range(4))
        heads = tuple(state[f"backbone.layers.{i}.blocks.0.attn.relative_position_bias_table"].shape[1] for i in range(4))
        table = state["backbone.layers.0.blocks.0.attn.relative_position_bias_table"].shape[0]
        window = (int(round(table**0.5)) + 1) // 2
        img = int(bparams.get("pretrain_img_size") or (384 if dim >= 128 else 224))
        ov = dict(embed_dim=dim, depths=depths, stage_heads=heads, window_size=window, img_size=img,
                  num_cross_blocks=n_cross, cross_modality=n_cross > 0, head_channels=head_ch)  # fmt: skip
        base = "icmformer_swin_base_384" if dim >= 128 else "icmformer_swin_small_224"
    else:
        raise ValueError("not an official iCMFormer state dict: found neither 'patch_embed_coords' (ViT) nor Swin relative-position tables")
    if n_cross == 0:
        ov.pop("num_cross_blocks")
    defaults = MODEL_CONFIGS[base]
    ov = {k: v for k, v in ov.items() if v is not None and getattr(defaults, k) != v}
    return base, ov
