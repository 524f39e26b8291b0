"""Inputs and outputs of interactive annotation: clicks, click files, images and models.

Clicks are written in many ways by people and notebooks; :func:`parse_click` accepts them all and
returns a :class:`~icmformer.evaluation.clicker.Click`:

- ``"y,x,+"`` / ``"y,x,-"`` (the CLI's ``--click``; also ``pos``/``neg``, ``1``/``0``),
- ``[y, x, positive]`` with ``positive`` a bool, ``1``/``0`` or one of the strings above,
- ``{"y": .., "x": .., "positive": ..}``,
- a ``Click``.

:func:`parse_objects` turns a notebook's ``clicks`` parameter into one click list per object: a
flat list of clicks is one object, a list of lists is one list per object, and a click file's
dictionary (see :func:`clicks_document`) gives its objects.

The click file (``<stem>_clicks.json``, :data:`CLICKS_FORMAT`) stores the image, the model, the
predictor options and, per object, its clicks ``[y, x, positive]`` (rows and columns in pixels of
the full image), so an annotation can be resumed or replayed.
"""
from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from icmformer.evaluation.clicker import Click

CLICKS_FORMAT = "icmformer-clicks"
CLICKS_VERSION = 1
DEFAULT_UNTRAINED_MODEL = "icmformer_vit_tiny_224"
DEMO_CHECKPOINT = "results/runs/vit/model.safetensors"

_POSITIVE = {"+": True, "pos": True, "positive": True, "1": True, "true": True, "fg": True,
             "-": False, "neg": False, "negative": False, "0": False, "false": False, "bg": False}  # fmt: skip


class UntrainedModelWarning(UserWarning):
    """A model without trained weights is in use: its masks are meaningless."""


# ------------------------------------------------------------------------------ clicks
def parse_positive(value: Any, what: str = "click label") -> bool:
    """``True`` for a positive (foreground) label, ``False`` for a negative one."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and int(value) in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _POSITIVE:
        return _POSITIVE[value.strip().lower()]
    raise ValueError(f"{what}: expected + or - (also pos/neg, 1/0, true/false), got {value!r}")


def _coord(value: Any, name: str, what: str) -> int:
    """A coordinate from text or JSON -> pixel index, by the rule of ``Predictor.add_click``
    (:mod:`icmformer.evaluation.click_input`: finite numbers, fractions to the nearest pixel)."""
    from icmformer.evaluation.click_input import pixel_coordinate

    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ValueError(f"{what}: {name} must be a number (pixel coordinate), got {value!r}") from None
    return pixel_coordinate(value, name, what)


def parse_click(value: Any, index: int = 0, what: str | None = None) -> Click:
    """One click from ``"y,x,+"``, ``[y, x, positive]``, ``{"y", "x", "positive"}`` or a ``Click``."""
    what = what or f"click {value!r}"
    if isinstance(value, Click):
        return Click(bool(value.is_positive), (int(value.coords[0]), int(value.coords[1])), index)
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",")]
        if len(parts) != 3:
            raise ValueError(f"{what}: expected Y,X,+ or Y,X,- (row, column, label), got {value!r}")
        y, x, label = parts
    elif isinstance(value, dict):
        missing = [k for k in ("y", "x", "positive") if k not in value]
        if missing:
            raise ValueError(f"{what}: a click dict needs keys y, x, positive; missing {', '.join(missing)}")
        y, x, label = value["y"], value["x"], value["positive"]
    elif isinstance(value, (list, tuple, np.ndarray)) and len(value) == 3:
        y, x, label = value
    else:
        raise ValueError(f"{what}: expected [y, x, positive], 'y,x,+' or a Click")
    return Click(parse_positive(label, what), (_coord(y, "y", what), _coord(x, "x", what)), index)


def parse_clicks(values: Iterable[Any], what: str = "clicks") -> list[Click]:
    """A list of clicks (indices set to their positions)."""
    return [parse_click(v, i, f"{what}[{i}] = {v!r}") for i, v in enumerate(values)]


def _is_click_like(value: Any) -> bool:
    if isinstance(value, (Click, str, dict)):
        return True
    return isinstance(value, (list, tuple, np.ndarray)) and len(value) == 3 and not isinstance(value[0], (list, tuple, dict, np.ndarray, Click))


def parse_objects(spec: Any) -> list[list[Click]]:
    """One click list per object from a notebook's ``clicks`` parameter or a click file's dict.

    ``None`` or ``[]`` -> no object; ``[[y, x, p], ...]`` -> one object; ``[[[y, x, p], ...], ...]``
    -> one object per inner list; ``{"objects": [{"clicks": [...]}, ...]}`` -> its objects.
    """
    if spec is None:
        return []
    if isinstance(spec, dict):
        if "objects" not in spec:
            raise ValueError("a clicks dict needs an 'objects' list (the format written by export)")
        objects = []
        for k, obj in enumerate(spec["objects"]):
            clicks = obj.get("clicks") if isinstance(obj, dict) else obj
            if clicks is None:
                raise ValueError(f"clicks file: object {k + 1} has no 'clicks' list")
            objects.append(parse_clicks(clicks, f"object {k + 1} clicks"))
        return objects
    if isinstance(spec, (str, bytes)) or not isinstance(spec, (list, tuple)):
        raise ValueError(f"clicks: expected a list of [y, x, positive] (or one such list per object), got {spec!r}")
    spec = list(spec)
    if not spec:
        return []
    if all(_is_click_like(v) for v in spec):
        return [parse_clicks(spec)]
    objects = []
    for k, obj in enumerate(spec):
        if isinstance(obj, dict) and "clicks" in obj:
            obj = obj["clicks"]
        if not isinstance(obj, (list, tuple)):
            raise ValueError(f"clicks: object {k + 1} must be a list of [y, x, positive], got {obj!r}")
        objects.append(parse_clicks(obj, f"object {k + 1} clicks"))
    return objects


def check_clicks_inside(clicks: Sequence[Click], size: tuple[int, int], what: str = "click") -> None:
    """``ValueError`` naming the first click outside an image of ``size = (H, W)``."""
    h, w = size
    for c in clicks:
        y, x = c.coords
        if not (0 <= y < h and 0 <= x < w):
            raise ValueError(
                f"{what} (y={y}, x={x}) lies outside the image of {h}x{w} (HxW); "
                f"need 0 <= y <= {h - 1} and 0 <= x <= {w - 1}"
            )


# ------------------------------------------------------------------------------ click files
def clicks_document(
    objects: Sequence[Sequence[Click]],
    image_size: tuple[int, int],
    image_info: dict | None = None,
    model_info: dict | None = None,
    predictor_info: dict | None = None,
    object_info: Sequence[dict] | None = None,
) -> dict:
    """The click file's content (plain JSON values)."""
    objs = []
    for k, clicks in enumerate(objects):
        entry = {"id": k + 1, "clicks": [c.to_list() for c in clicks]}
        if object_info is not None and k < len(object_info):
            entry.update(object_info[k])
        objs.append(entry)
    return {
        "format": CLICKS_FORMAT,
        "version": CLICKS_VERSION,
        "image": {**(image_info or {}), "height": int(image_size[0]), "width": int(image_size[1])},
        "model": dict(model_info or {}),
        "predictor": dict(predictor_info or {}),
        "objects": objs,
    }


def read_clicks_file(path: str | Path) -> dict:
    """Read and check a click file written by export (or a plain JSON list of clicks)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"clicks file not found: {path}")
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a JSON file ({exc})") from exc
    if isinstance(doc, list):
        try:
            objects = parse_objects(doc)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from exc
        objs = [{"id": k + 1, "clicks": [c.to_list() for c in o]} for k, o in enumerate(objects)]
        return {"format": CLICKS_FORMAT, "version": CLICKS_VERSION, "image": {}, "model": {}, "predictor": {}, "objects": objs}
    if not isinstance(doc, dict) or doc.get("format") != CLICKS_FORMAT:
        raise ValueError(f"{path}: not an icmformer click file (expected a JSON object with format={CLICKS_FORMAT!r}, or a list of [y, x, positive])")
    if int(doc.get("version", 0)) > CLICKS_VERSION:
        raise ValueError(f"{path}: click file version {doc.get('version')} is newer than this icmformer reads ({CLICKS_VERSION})")
    try:
        parse_objects(doc)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    return doc


# ------------------------------------------------------------------------------ paths
def resolve_path(path: str | Path | None) -> Path | None:
    """A notebook parameter's path: absolute paths stay; relative ones are relative to the
    repository root, which is the parent of the working directory when that is the repository's
    ``notebooks/`` folder (JupyterLab runs a notebook there), else the working directory itself."""
    if path is None or str(path) == "":
        return None
    path = Path(path).expanduser()
    if path.is_absolute():
        return path
    cwd = Path.cwd()
    base = cwd.parent if cwd.name == "notebooks" and (cwd.parent / "icmformer").is_dir() else cwd
    return base / path


# ------------------------------------------------------------------------------ images
def demo_image(height: int = 240, width: int = 320, seed: int = 0) -> np.ndarray:
    """A synthetic RGB image (textured background, a disc and a rectangle) for demos and tests."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    bg = np.stack([60 + 40 * xx / width, 90 + 30 * yy / height, 70 + 20 * np.sin(xx / 9.0)], axis=2)
    img = bg + rng.normal(0, 6, (height, width, 3))
    disc = (yy - 0.5 * height) ** 2 + (xx - 0.38 * width) ** 2 <= (0.25 * min(height, width)) ** 2
    img[disc] = (220, 70, 50) + rng.normal(0, 6, (int(disc.sum()), 3))
    rect = (yy > 0.2 * height) & (yy < 0.6 * height) & (xx > 0.68 * width) & (xx < 0.9 * width)
    img[rect] = (50, 80, 210) + rng.normal(0, 6, (int(rect.sum()), 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def load_image(
    image_path: str | Path | None = None,
    dataset: str | None = None,
    index: int = 0,
    data_root: str | Path | None = None,
) -> tuple[np.ndarray, dict]:
    """An ``H x W x 3`` uint8 RGB image and a description of where it came from.

    Give ``image_path``, or ``dataset`` (a :func:`~icmformer.data.datasets.get_dataset` name) with
    ``index`` and ``data_root``; with neither, the synthetic :func:`demo_image` is used (and said).
    """
    if image_path is not None and dataset is not None:
        raise ValueError("give either image_path or dataset (+ index, data_root), not both")
    if image_path is not None:
        from icmformer.data.datasets import read_image

        path = Path(image_path)
        return read_image(path), {"file": str(path), "name": path.stem}
    if dataset is not None:
        from icmformer.data.datasets import get_dataset

        if data_root is None:
            raise ValueError(f"dataset {dataset!r} needs data_root (the folder holding {dataset}/)")
        sample = get_dataset(dataset, data_root)[int(index)]
        return sample.image, {
            "file": str(sample.image_path) if sample.image_path else None,
            "name": str(sample.name),
            "dataset": str(dataset),
            "index": int(index),
        }
    return demo_image(), {"file": None, "name": "demo", "synthetic": True}


# ------------------------------------------------------------------------------ models
def untrained_message(name: str) -> str:
    return (
        f"WARNING: no checkpoint given, so {name} has UNTRAINED (random) weights: its masks and "
        f"attention maps are meaningless. Pass a trained checkpoint, e.g. the demo pipeline's "
        f"{DEMO_CHECKPOINT}."
    )


def load_model(
    checkpoint: str | Path | None = None,
    model_name: str | None = None,
    device: str | None = None,
    seed: int = 0,
    announce: bool = True,
    pretrained: bool = False,
    **overrides: Any,
):
    """A model in eval mode, from a checkpoint, shipped weights or (with a loud warning) untrained.

    ``checkpoint`` alone: the model the file describes (``overrides`` must keep the weights'
    shapes). ``model_name`` with ``checkpoint``: that architecture, the checkpoint's weights (e.g. an
    official ``.pth``). ``model_name`` with ``pretrained``: the weights shipped with the package.
    Otherwise ``model_name`` (default :data:`DEFAULT_UNTRAINED_MODEL`) with weights drawn from
    ``torch.manual_seed(seed)``, an :class:`UntrainedModelWarning` and, with ``announce``, the
    message on stderr. The model gets ``checkpoint_path`` (``None`` if untrained). Built by
    :func:`icmformer.models.factory.load_model`.
    """
    import torch

    from icmformer.models.factory import load_model as build

    trained = checkpoint is not None or pretrained
    name = model_name or (None if trained else DEFAULT_UNTRAINED_MODEL)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build(checkpoint, name, pretrained=pretrained, device=device, **overrides)
    if not trained:
        msg = untrained_message(name)
        warnings.warn(msg, UntrainedModelWarning, stacklevel=2)
        if announce:
            print(msg, file=sys.stderr)
    return model


def model_info(model) -> dict:
    """Name, overrides, checkpoint and whether the weights are trained (for click files)."""
    ckpt = getattr(model, "checkpoint_path", None)
    return {
        "name": getattr(model, "name", None),
        "overrides": {k: (list(v) if isinstance(v, tuple) else v) for k, v in (getattr(model, "overrides", None) or {}).items()},
        "checkpoint": ckpt,
        "trained": ckpt is not None,
    }
