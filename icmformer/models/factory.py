"""The one place that builds models and loads weights into them.

- :func:`create_model` ``(name, pretrained=False, checkpoint=None, pretrained_backbone=None,
  device=None, **overrides)``: a registry model (:mod:`icmformer.models.registry`), optionally
  with our shipped weights (``pretrained=True``), a checkpoint file's weights, or MAE / ImageNet
  backbone weights.
- :func:`load_checkpoint` ``(path)``: the model a checkpoint file describes (ours, or an official
  isegm ``.pth`` whose architecture is inferred), with its weights.
- :func:`load_model`: what the command line and the notebooks call with their ``--checkpoint`` /
  ``--model`` / ``--pretrained`` choices.
- :func:`list_models` ``(pretrained=False)``: the registry names (with ``pretrained=True`` only
  those whose weights ship with the package).

Shipped weights are files ``<name>.safetensors`` (our format) in the package folder
``icmformer/weights/``; the environment variable ``ICMFORMER_WEIGHTS_DIR`` points elsewhere.
The formats themselves: ours in :mod:`icmformer.models.checkpoint`, the official one in
:mod:`icmformer.models.official`, backbone files in :mod:`icmformer.models.pretrained`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from icmformer.models.checkpoint import (
    existing_file,
    is_safetensors,
    load_state_dict_strict,
    read_model_metadata,
    read_state,
    save_checkpoint,
)
from icmformer.models.official import convert_official_state_dict, infer_official_architecture, read_official
from icmformer.models.registry import MODEL_CONFIGS, get_config
from icmformer.models.registry import list_models as _registry_names

WEIGHTS_ENV = "ICMFORMER_WEIGHTS_DIR"
#: the model whose shipped weights the CLI and the annotation notebook use by default
DEFAULT_PRETRAINED_MODEL = "icmformer_vit_demo_320"
PACKAGE_WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


def weights_dir() -> Path:
    """Where shipped weights are looked up: ``$ICMFORMER_WEIGHTS_DIR`` or ``icmformer/weights/``."""
    return Path(os.environ.get(WEIGHTS_ENV) or PACKAGE_WEIGHTS_DIR)


def shipped_weights(name: str) -> Path | None:
    """The shipped weights file of registry model ``name``, or ``None`` if it ships none."""
    path = weights_dir() / f"{name}.safetensors"
    return path if path.is_file() else None


def list_models(pretrained: bool = False) -> list[str]:
    """Names accepted by :func:`create_model`; with ``pretrained`` only those that ship weights."""
    names = _registry_names()
    return [n for n in names if shipped_weights(n) is not None] if pretrained else names


def _shipped_or_error(name: str) -> Path:
    path = shipped_weights(name)
    if path is None:
        have = list_models(pretrained=True)
        raise ValueError(
            f"model {name!r} ships no pretrained weights (no {name}.safetensors in {weights_dir()}); "
            f"models with weights: {', '.join(have) if have else 'none in this installation'}"
        )
    return path


def create_model(
    name: str,
    pretrained: bool = False,
    *,
    checkpoint: str | Path | None = None,
    pretrained_backbone: str | Path | None = None,
    device: str | torch.device | None = None,
    **overrides: Any,
):
    """Build a model by name.

    Args:
        name: a registry name (see :func:`list_models`).
        pretrained: load the weights shipped with the package for ``name`` (``ValueError``
            naming the models that ship weights if it has none); ``overrides`` must then keep
            the weights' shapes.
        checkpoint: weights to load: our ``.safetensors`` format or an official iCMFormer
            (isegm) checkpoint; a checkpoint of another architecture raises ``ValueError`` with a
            summary of missing / unexpected / mis-shaped keys.
        pretrained_backbone: a local file with MAE / ImageNet ViT weights or ImageNet Swin
            weights (timm or original layout) to initialise the backbone from.
        device: where to put the model (default CPU).
        **overrides: any :class:`~icmformer.models.config.ICMFormerConfig` field, e.g.
            ``embed_dim=64, depth=4`` to shrink a model for tests, or the ablation switches
            ``cross_modality``, ``cross_variant``, ``num_cross_blocks``, ``shared_depth`` /
            ``shared_stages``, ``window_size``.
    """
    from icmformer.models.icmformer import ICMFormer

    if not isinstance(pretrained, bool):
        raise ValueError(f"pretrained must be True or False, got {pretrained!r} (a weights file goes in checkpoint=PATH)")
    if pretrained and checkpoint is not None:
        raise ValueError("give either pretrained=True (the shipped weights) or checkpoint=FILE, not both")
    if pretrained:
        path = _shipped_or_error(name)
        saved_name, saved = read_model_metadata(path)
        if saved_name != name:
            raise ValueError(f"{path}: the shipped weights are for model {saved_name!r}, not {name!r}")
        overrides = {**saved, **overrides}
        checkpoint = path
    model = ICMFormer(get_config(name, **overrides), name=name)
    model.overrides = dict(overrides)
    if pretrained_backbone is not None:
        from icmformer.models.pretrained import load_pretrained_backbone

        load_pretrained_backbone(model, pretrained_backbone)
    if checkpoint is not None:
        load_weights(model, checkpoint)
    if device is not None:
        model.to(device)
    return model


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load weights from our format or an official checkpoint into ``model`` (strict)."""
    path = existing_file(path)
    if is_safetensors(path):
        state, source = _fit_pos_embed(read_state(path), model), "icmformer"
    else:
        state, source = convert_official_state_dict(read_official(path)[0], model), "official"
    load_state_dict_strict(model, state, f"{path} ({source} layout)")


def _fit_pos_embed(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """``state`` with its ViT position embedding (a square grid) resized bicubically to ``model``'s
    token grid when the two differ, e.g. weights trained at 224 px loaded into the same network at
    320 px, exactly as the model resizes it for another input at run time; every other tensor, and
    an embedding of the model's own size, is untouched."""
    key = "backbone.pos_embed"
    backbone = getattr(model, "backbone", None)
    own, pos = getattr(backbone, "pos_embed", None), state.get(key)
    if own is None or pos is None or pos.shape == own.shape or pos.ndim != 3 or pos.shape[2] != own.shape[2]:
        return state
    side = round(pos.shape[1] ** 0.5)
    if side * side != pos.shape[1]:
        return state
    from icmformer.models.vit import resize_pos_embed

    return {**state, key: resize_pos_embed(pos, (side, side), backbone.grid)}


def load_checkpoint(path: str | Path, device: str | torch.device | None = None, **overrides: Any):
    """Build the model a checkpoint describes and load its weights.

    Accepts our ``.safetensors`` files and official iCMFormer checkpoints (the architecture is
    inferred from the official state dict). ``overrides`` replace config fields that do not change
    the weights' shapes (e.g. ``head_dropout``).
    """
    path = existing_file(path)
    if is_safetensors(path):
        name, saved = read_model_metadata(path)
        if name not in MODEL_CONFIGS:
            raise ValueError(f"{path}: checkpoint names model {name!r}, which this version does not know")
    else:
        state, config = read_official(path)
        name, saved = infer_official_architecture(state, config)
    model = create_model(name, checkpoint=path, device=device, **{**saved, **overrides})
    return model.eval()


def load_model(
    checkpoint: str | Path | None = None,
    model_name: str | None = None,
    pretrained: bool = False,
    device: str | torch.device | None = None,
    **overrides: Any,
):
    """A model in eval mode from the command line's choices, with ``checkpoint_path`` set.

    ``checkpoint`` alone: the model the file describes. ``model_name`` and ``checkpoint``: that
    architecture with the file's weights (e.g. an official ``.pth``). ``model_name`` and
    ``pretrained``: the shipped weights. ``model_name`` alone: random (untrained) weights, with
    ``checkpoint_path = None`` so callers can warn.
    """
    if checkpoint is None and not model_name:
        raise ValueError("give a checkpoint file, or a model name (with pretrained=True for its shipped weights)")
    if pretrained and checkpoint is not None:
        raise ValueError("give either --pretrained (the shipped weights) or --checkpoint FILE, not both")
    if pretrained and not model_name:
        raise ValueError("--pretrained needs --model NAME (the model whose shipped weights to load)")
    if checkpoint is not None and not model_name:
        model = load_checkpoint(checkpoint, **overrides)
    else:
        model = create_model(model_name, pretrained=pretrained, checkpoint=checkpoint, **overrides)
    path = checkpoint if checkpoint is not None else (shipped_weights(model_name) if pretrained else None)
    model.checkpoint_path = None if path is None else str(path)
    if device is not None:
        model = model.to(device)
    return model.eval()


def convert_official(src: str | Path, dst: str | Path) -> Path:
    """Convert an official checkpoint file to our format; returns the written path."""
    model = load_checkpoint(src)
    return save_checkpoint(model, dst, metadata={"converted_from": str(Path(src).name)})
