"""Export a model to two ONNX graphs that mirror the two-stage API (``icmformer export-onnx``).

``encoder.onnx`` = :meth:`ICMFormer.encode_image`; ``decoder.onnx`` = :meth:`ICMFormer.predict_clicks`
(click disks drawn inside the graph), beside ``icmformer_onnx.json`` (:data:`METADATA_FILE`):

=================  ========================================================  ==========================
graph              inputs                                                    outputs
=================  ========================================================  ==========================
``encoder.onnx``   ``image`` float32 ``B x 3 x T x T``, RGB in [0, 1]        every tensor field of the
                   (ImageNet normalisation happens inside)                   image state, by field name
                                                                             (``features``, and e.g.
                                                                             ``skip`` / ``embedding``)
``decoder.onnx``   the state tensors (same names), ``clicks`` float32        ``logits`` float32
                   ``B x N x 3`` rows ``(y, x, label)`` in pixels of the     ``B x 1 x T x T``
                   ``T x T`` crop (label 1 positive, 0 negative, -1
                   padding; clicks may lie outside the crop),
                   ``prev_mask`` float32 ``B x 1 x T x T`` in [0, 1]
=================  ========================================================  ==========================

``B`` (batch) and ``N`` (clicks) are dynamic; ``T`` is fixed at export (the model's input size,
or ``--input-size``), because the zoom-in protocol always resizes its crop to ``T x T``. The
state's non-tensor fields (``image_size``, ViT ``grid``) are constants of the graphs and recorded
in the JSON. Exported with PyTorch's dynamo exporter (``torch.export`` + onnxscript), default opset
:data:`DEFAULT_OPSET`, weights inside each ``.onnx`` file.
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
import warnings
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import torch
from torch import nn

ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder.onnx"
METADATA_FILE = "icmformer_onnx.json"
FORMAT = "icmformer-onnx"
DEFAULT_OPSET = 18
PARITY_TOLERANCE = 1e-4


def state_layout(state) -> tuple[list[str], dict]:
    """``(tensor field names, other fields)`` of an image state (a dataclass such as
    :class:`~icmformer.models.icmformer.ImageState`): every field holding a tensor travels through
    the graphs; the others (sizes, grids, ``None`` fields) are constants of the export."""
    if not dataclasses.is_dataclass(state):
        raise ValueError(f"the model's encode_image must return a dataclass state, got {type(state).__name__}")
    tensors, static = [], {}
    for f in dataclasses.fields(state):
        value = getattr(state, f.name)
        if isinstance(value, torch.Tensor):
            tensors.append(f.name)
        else:
            static[f.name] = value
    return tensors, static


class EncoderGraph(nn.Module):
    """``image -> tuple(state tensors)`` in :func:`state_layout` order."""

    def __init__(self, model: nn.Module, tensor_names: list[str]) -> None:
        super().__init__()
        self.model = model
        self.tensor_names = list(tensor_names)

    def forward(self, image: torch.Tensor):
        state = self.model.encode_image(image)
        return tuple(getattr(state, name) for name in self.tensor_names)


class DecoderGraph(nn.Module):
    """``(*state tensors, clicks, prev_mask) -> logits``: the state is rebuilt from its tensors and
    the export's constant fields; the clicks become disk maps inside the graph (the same
    :func:`~icmformer.models.clicks.encode_clicks` as the model; rows with another label than 1 / 0
    paint nothing)."""

    def __init__(self, model: nn.Module, state_type: type, tensor_names: list[str], static: dict) -> None:
        super().__init__()
        self.model = model
        self.state_type = state_type
        self.tensor_names = list(tensor_names)
        self.static = dict(static)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        from icmformer.models.clicks import encode_clicks

        *tensors, clicks, prev_mask = inputs
        state = self.state_type(**dict(zip(self.tensor_names, tensors)), **self.static)
        size = tuple(state.image_size)
        maps = torch.cat([prev_mask, encode_clicks(clicks, size, self.model.config.click_radius)], dim=1)
        return self.model.predict_from_maps(state, maps)


def example_inputs(input_size: int, batch: int = 2, clicks: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Seeded ``(images, clicks, prev_masks)`` for tracing and parity checks: random crops, a mix
    of positive / negative / padding clicks (one of them outside the crop), random previous maps."""
    g = torch.Generator().manual_seed(seed)
    t = int(input_size)
    images = torch.rand(batch, 3, t, t, generator=g)
    pts = torch.rand(batch, clicks, 3, generator=g) * (t - 1)
    labels = torch.tensor([1.0, 0.0, -1.0])[torch.arange(batch * clicks) % 3].view(batch, clicks)
    pts[..., 2] = labels
    pts[:, 0, 2] = 1.0
    if clicks > 1:
        pts[0, 1, :2] = torch.tensor([-3.0, t + 2.0])  # a negative click outside the crop
    prev = torch.rand(batch, 1, t, t, generator=g)
    return images, pts, prev


def _shape(x: torch.Tensor, dynamic: dict[int, str]) -> list:
    return [dynamic.get(i, int(s)) for i, s in enumerate(x.shape)]


def _export(module: nn.Module, args: tuple, path: Path, names_in: list[str], names_out: list[str], dynamic_shapes, opset: int) -> None:
    import logging

    chatter = io.StringIO()
    # torch.export emits structured trace records at DEBUG level; where a handler collects them
    # (e.g. pytest's log capture) formatting them costs minutes, so they stay local during export
    trace_log = logging.getLogger("torch.__trace")
    propagate = trace_log.propagate
    trace_log.propagate = False
    with warnings.catch_warnings(), redirect_stdout(chatter):
        warnings.simplefilter("ignore")
        try:
            _run_export(module, args, path, names_in, names_out, dynamic_shapes, opset)
        finally:
            trace_log.propagate = propagate


def _run_export(module, args, path, names_in, names_out, dynamic_shapes, opset) -> None:
    torch.onnx.export(
        module, args, str(path), input_names=names_in, output_names=names_out, dynamic_shapes=dynamic_shapes,
        opset_version=opset, dynamo=True, external_data=False, optimize=True, verbose=False,
    )  # fmt: skip


def export_onnx(
    model: nn.Module,
    out_dir: str | Path,
    input_size: int | None = None,
    opset: int = DEFAULT_OPSET,
    verify: bool = True,
    source: dict | None = None,
) -> dict:
    """Write ``encoder.onnx``, ``decoder.onnx`` and ``icmformer_onnx.json`` for ``model`` to ``out_dir``.

    Args:
        model: an ICMFormer (eval mode is set; the model is not changed otherwise).
        input_size: ``T``, the crop side the graphs take (default ``model.default_input_size``).
        opset: ONNX opset of the graphs.
        verify: run both graphs with onnxruntime on :func:`example_inputs` (batch 2 and 3, so the
            dynamic batch is exercised) and record the largest logit difference to PyTorch in the
            metadata (``parity``); raises ``ValueError`` above :data:`PARITY_TOLERANCE`.
        source: extra provenance (e.g. the checkpoint path) stored in the metadata.

    Returns the metadata dictionary (also written as JSON).
    """
    from icmformer.models.icmformer import IMAGENET_MEAN, IMAGENET_STD

    model = model.eval()
    t = int(input_size or model.default_input_size)
    if t < 1:
        raise ValueError(f"input size must be a positive int, got {input_size}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images, clicks, prev = example_inputs(t)
    with torch.inference_mode():
        state = model.encode_image(images)
    tensor_names, static = state_layout(state)
    static_json = {k: (list(v) if isinstance(v, tuple) else v) for k, v in static.items()}
    enc = EncoderGraph(model, tensor_names)
    dec = DecoderGraph(model, type(state), tensor_names, static)
    batch = torch.export.Dim("batch", min=1, max=1024)
    nclicks = torch.export.Dim("clicks", min=1, max=4096)
    try:
        _export(enc, (images,), out / ENCODER_FILE, ["image"], tensor_names, {"image": {0: batch}}, opset)
        state_tensors = tuple(getattr(state, n).clone() for n in tensor_names)
        dyn = tuple({0: batch} for _ in tensor_names) + ({0: batch, 1: nclicks}, {0: batch})
        _export(dec, state_tensors + (clicks, prev), out / DECODER_FILE, tensor_names + ["clicks", "prev_mask"], ["logits"],
                (dyn,), opset)  # fmt: skip
    except Exception as exc:  # the exporter's errors are pages long: one line, the cause chained
        root = exc
        while root.__cause__ is not None:
            root = root.__cause__
        first = str(root).strip().splitlines()[0] if str(root).strip() else type(root).__name__
        raise ValueError(f"ONNX export of {getattr(model, 'name', 'the model')} at {t}x{t} failed: {first}") from exc

    dims = {0: "batch"}
    meta = {
        "format": FORMAT,
        "version": 1,
        "model": getattr(model, "name", None),
        "overrides": json.loads(json.dumps(dict(getattr(model, "overrides", {}) or {}), default=str)),
        "source": dict(source or {}),
        "input_size": t,
        "opset": int(opset),
        "threshold": 0.49,
        "normalisation": {
            "input": "RGB float32 in [0, 1] (uint8 / 255), B x 3 x T x T; the encoder normalises inside",
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
        },
        "clicks": {
            "layout": "B x N x 3 float32 rows (y, x, label); y = row, x = column in pixels of the T x T crop",
            "labels": {"1": "positive", "0": "negative", "-1": "padding"},
            "disk_radius": float(model.config.click_radius),
            "note": "disks are drawn inside decoder.onnx; clicks outside the crop paint the part of their disk inside it",
        },
        "state": {"tensors": tensor_names, "static": static_json},
        "encoder": {
            "file": ENCODER_FILE,
            "inputs": [{"name": "image", "dtype": "float32", "shape": _shape(images, dims)}],
            "outputs": [{"name": n, "dtype": "float32", "shape": _shape(getattr(state, n), dims)} for n in tensor_names],
        },
        "decoder": {
            "file": DECODER_FILE,
            "inputs": [{"name": n, "dtype": "float32", "shape": _shape(getattr(state, n), dims)} for n in tensor_names]
            + [
                {"name": "clicks", "dtype": "float32", "shape": ["batch", "clicks", 3]},
                {"name": "prev_mask", "dtype": "float32", "shape": ["batch", 1, t, t]},
            ],
            "outputs": [{"name": "logits", "dtype": "float32", "shape": ["batch", 1, t, t]}],
        },
        "protocol": "zoom-in + flip as icmformer.evaluation (crop resized to T x T, flip in the batch, logits averaged)",
        "versions": {"torch": torch.__version__, "onnx": _version("onnx"), "onnxscript": _version("onnxscript")},
    }
    _write_json(out / METADATA_FILE, meta)
    if verify:
        meta["parity"] = check_parity(model, out)
        _write_json(out / METADATA_FILE, meta)
        worst = meta["parity"]["max_abs_logit_diff"]
        if not worst <= PARITY_TOLERANCE:
            raise ValueError(f"ONNX export of {meta['model']}: max |logit diff| {worst:.2e} vs PyTorch exceeds {PARITY_TOLERANCE:g}")
    return meta


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except Exception:  # pragma: no cover - optional
        return None


def check_parity(model: nn.Module, out_dir: str | Path, batches=(2, 3), seed: int = 1) -> dict:
    """Largest ``|logit_onnx - logit_torch|`` and ``|state_onnx - state_torch|`` over seeded
    inputs at the given batch sizes (the same weights: the exported ones and ``model``)."""
    from icmformer.deploy.onnx_backend import OnnxBackend

    backend = OnnxBackend(out_dir)
    t = backend.default_input_size
    worst_logit, worst_state = 0.0, 0.0
    for i, b in enumerate(batches):
        images, clicks, prev = example_inputs(t, batch=b, clicks=2 + i, seed=seed + i)
        with torch.inference_mode():
            state = model.encode_image(images)
            ref = model.predict_clicks(state, clicks, prev, allow_outside_clicks=True)
        ostate = backend.encode(images)
        for name in backend.state_tensors:
            worst_state = max(worst_state, float((ostate.tensors[name] - getattr(state, name)).abs().max()))
        got = backend.decode(ostate, clicks, prev)
        worst_logit = max(worst_logit, float((got - ref).abs().max()))
    return {"batches": list(batches), "max_abs_logit_diff": worst_logit, "max_abs_state_diff": worst_state,
            "logit_scale": float(np.abs(ref.numpy()).max())}  # fmt: skip
