"""Our checkpoint format: one ``.safetensors`` file with the model's name and overrides in its metadata.

Our format is a single ``.safetensors`` file: the model's state dict plus metadata
``{"format": "icmformer", "format_version": "1", "model": <registry name>, "overrides": <JSON>,
"config": <JSON of the full config>}``. Loading needs no pickled classes.

Official (isegm) checkpoints: :mod:`icmformer.models.official`. Building and loading models
(ours, official, pretrained backbones, shipped weights): :mod:`icmformer.models.factory`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

FORMAT = "icmformer"
FORMAT_VERSION = "1"


# ---------------------------------------------------------------------------------- our format
def save_checkpoint(model: nn.Module, path: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Write ``model`` to ``path`` (``.safetensors``) atomically; returns the path."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: our checkpoints are .safetensors files")
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": str(getattr(model, "name", None) or ""),
        "overrides": json.dumps(getattr(model, "overrides", {}) or {}, sort_keys=True),
        "config": json.dumps(model.config.to_dict(), sort_keys=True),
    }
    for k, v in (metadata or {}).items():
        meta[str(k)] = v if isinstance(v, str) else json.dumps(v)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    from icmformer.utils import atomic_path  # makes the folder; readers never see a partial file

    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return path


def read_metadata(path: str | Path) -> dict[str, str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as exc:  # SafetensorError: truncated, bad header length, header too large
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(f"{path}: cannot read safetensors file (corrupt or truncated: {first})") from exc


def is_safetensors(path: Path) -> bool:
    """True if ``path`` starts like a safetensors file (8-byte header length, then a JSON object)."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def read_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; a corrupt or truncated file raises ``ValueError``."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as exc:  # corrupt or truncated file
        raise ValueError(f"{path}: cannot read safetensors file ({exc})") from exc


def read_model_metadata(path: str | Path) -> tuple[str, dict[str, Any]]:
    """``(registry name, overrides)`` stored in one of our checkpoints; ``ValueError`` for a
    safetensors file of another format."""
    meta = read_metadata(path)
    if meta.get("format") != FORMAT:
        raise ValueError(
            f"{path}: not an icmformer checkpoint (safetensors metadata has no format={FORMAT!r}); "
            "for official isegm checkpoints use the original .pth file or `icmformer convert-official`"
        )
    version = meta.get("format_version", "1")
    if not str(version).isdigit() or int(version) > int(FORMAT_VERSION):
        raise ValueError(
            f"{path}: checkpoint format_version {version!r} is newer than this icmformer reads ({FORMAT_VERSION}); "
            "upgrade icmformer to load it"
        )
    try:
        overrides = json.loads(meta.get("overrides") or "{}")
    except ValueError as exc:
        raise ValueError(f"{path}: metadata 'overrides' is not valid JSON ({exc})") from None
    if not isinstance(overrides, dict) or not all(isinstance(k, str) for k in overrides):
        raise ValueError(f"{path}: metadata 'overrides' must be a JSON object of config fields, got {type(overrides).__name__}")
    return meta.get("model") or "", overrides


def load_state_dict_strict(model: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """``load_state_dict(strict=True)`` with an error that summarises what does not match."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [(k, tuple(state[k].shape), tuple(own[k].shape)) for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        name = getattr(model, "name", None) or type(model).__name__

        def few(items: list) -> str:
            shown = ", ".join(map(str, items[:5]))
            return shown + (f", ... ({len(items) - 5} more)" if len(items) > 5 else "")

        lines = [f"{what} does not match model {name!r}:"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {few(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {few(unexpected)}")
        if shapes:
            lines.append(f"  shape mismatches ({len(shapes)}): " + few([f"{k}: file {a} vs model {b}" for k, a, b in shapes]))
        raise ValueError("\n".join(lines))
    model.load_state_dict(state, strict=True)


def existing_file(path: str | Path) -> Path:
    """``path`` as a ``Path`` if it is a file, else ``FileNotFoundError`` naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return path


# Names that lived here before the factory and the official-format module existed; resolved
# lazily so that this module imports neither (no import cycle).
_MOVED = {
    "load_checkpoint": "icmformer.models.factory",
    "load_weights": "icmformer.models.factory",
    "convert_official": "icmformer.models.factory",
    "read_official": "icmformer.models.official",
    "convert_official_state_dict": "icmformer.models.official",
    "to_official_state_dict": "icmformer.models.official",
    "infer_official_architecture": "icmformer.models.official",
}
_is_safetensors = is_safetensors
_existing = existing_file


def __getattr__(name: str):
    if name in _MOVED:
        import importlib

        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
