"""The two model calls of the zoom-in + flip protocol core, run by onnxruntime.

:class:`OnnxBackend` reads a folder written by ``icmformer export-onnx`` and implements the core's
backend contract (``encode(crops) -> state``, ``decode(state, clicks, prev) -> logits``, see
:mod:`icmformer.evaluation.core`), so the protocol itself (ROI, crops, flip, pasting) is the one
implementation every predictor shares::

    from icmformer.deploy.onnx_backend import OnnxBackend
    from icmformer.evaluation.predictor import Predictor

    predictor = Predictor(OnnxBackend("export/"))      # same API as with a PyTorch model
    predictor.set_image(image)
    mask, prob = predictor.add_click(120, 200, positive=True)

States are :class:`OnnxState` objects: the encoder's named outputs as CPU tensors, batched with
``cat`` / ``select`` like :class:`~icmformer.models.icmformer.ImageState`.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from icmformer.deploy.onnx_export import FORMAT, METADATA_FILE
from icmformer.evaluation.core import ModelBackend


@dataclass
class OnnxState:
    """The encoder's outputs by name (CPU float32 tensors sharing the batch dimension)."""

    tensors: dict[str, torch.Tensor]

    @property
    def batch_size(self) -> int:
        return int(next(iter(self.tensors.values())).shape[0])

    @classmethod
    def cat(cls, states: Sequence["OnnxState"]) -> "OnnxState":
        states = list(states)
        if not states:
            raise ValueError("OnnxState.cat needs at least one state")
        if len(states) == 1:
            return states[0]
        return cls({k: torch.cat([s.tensors[k] for s in states], dim=0) for k in states[0].tensors})

    def select(self, items) -> "OnnxState":
        if isinstance(items, int):
            items = slice(items, items + 1)
        return OnnxState({k: v[items] for k, v in self.tensors.items()})


def read_export_metadata(directory: str | Path) -> dict:
    """The ``icmformer_onnx.json`` of an export folder (``FileNotFoundError`` / ``ValueError`` with
    the path if it is missing or not ours)."""
    path = Path(directory) / METADATA_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{directory}: no {METADATA_FILE}; export a model first with: icmformer export-onnx --out {directory}")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not an icmformer ONNX export (format is not {FORMAT!r})")
    return meta


class OnnxBackend(ModelBackend):
    """onnxruntime sessions for ``encoder.onnx`` and ``decoder.onnx`` of an export folder.

    Args:
        directory: the folder ``icmformer export-onnx --out`` wrote.
        threads: intra-op threads of each session (default: ``torch.get_num_threads()``, i.e.
            what PyTorch would use; ``OMP_NUM_THREADS`` is respected through it).
        providers: onnxruntime execution providers (default: CPU).
    """

    def __init__(self, directory: str | Path, threads: int | None = None, providers: Sequence[str] | None = None) -> None:
        import onnxruntime as ort

        self.directory = Path(directory)
        self.meta = read_export_metadata(self.directory)
        self.device = torch.device("cpu")
        self.default_input_size = int(self.meta["input_size"])
        self.state_tensors: list[str] = list(self.meta["state"]["tensors"])
        self.name = self.meta.get("model")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads or torch.get_num_threads() or 1)
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        providers = list(providers or ["CPUExecutionProvider"])
        files = {}
        for part in ("encoder", "decoder"):
            f = self.directory / self.meta[part]["file"]
            if not f.is_file():
                raise FileNotFoundError(f"{self.directory}: {self.meta[part]['file']} is missing (listed in {METADATA_FILE})")
            files[part] = f
        self.encoder = ort.InferenceSession(str(files["encoder"]), opts, providers=providers)
        self.decoder = ort.InferenceSession(str(files["decoder"]), opts, providers=providers)
        self.threads = opts.intra_op_num_threads
        self.providers = self.encoder.get_providers()
        self.ort_version = ort.__version__

    def __repr__(self) -> str:
        return f"OnnxBackend({str(self.directory)!r}, model={self.name!r}, T={self.default_input_size}, threads={self.threads})"

    # -------------------------------------------------------------- the two calls
    def encode(self, images: torch.Tensor) -> OnnxState:
        t = self.default_input_size
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or tuple(images.shape[1:]) != (3, t, t):
            raise ValueError(f"the ONNX encoder takes B x 3 x {t} x {t} float images, got {tuple(getattr(images, 'shape', ()))}")
        x = np.ascontiguousarray(images.detach().to("cpu", torch.float32).numpy())
        outs = self.encoder.run(self.state_tensors, {"image": x})
        return OnnxState({n: torch.from_numpy(o) for n, o in zip(self.state_tensors, outs)})

    def decode(self, state: OnnxState, clicks: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        t = self.default_input_size
        b = state.batch_size
        if not isinstance(clicks, torch.Tensor) or clicks.ndim != 3 or clicks.shape[0] != b or clicks.shape[2] != 3:
            raise ValueError(f"clicks must be {b} x N x 3 (y, x, label), got {tuple(getattr(clicks, 'shape', ()))}")
        labels = clicks[..., 2]
        if bool(((labels != 1) & (labels != 0) & (labels != -1)).any()):
            raise ValueError("click labels must be 1 (positive), 0 (negative) or -1 (padding)")
        if prev is None:
            prev = torch.zeros(b, 1, t, t)
        if tuple(prev.shape) != (b, 1, t, t):
            raise ValueError(f"prev_mask must be {b} x 1 x {t} x {t}, got {tuple(prev.shape)}")
        if clicks.shape[1] == 0:
            clicks = torch.full((b, 1, 3), -1.0)
        feed = {n: np.ascontiguousarray(state.tensors[n].numpy()) for n in self.state_tensors}
        feed["clicks"] = np.ascontiguousarray(clicks.detach().to("cpu", torch.float32).numpy())
        feed["prev_mask"] = np.ascontiguousarray(prev.detach().to("cpu", torch.float32).numpy())
        (logits,) = self.decoder.run(["logits"], feed)
        return torch.from_numpy(logits)

    def cat_states(self, states: Sequence[OnnxState]) -> OnnxState:
        return OnnxState.cat(states)

    def select_state(self, state: OnnxState, items) -> OnnxState:
        return state.select(items)

    def info(self) -> dict:
        """What runs: model, input size, onnxruntime version, providers, threads."""
        return {"backend": "onnxruntime", "model": self.name, "input_size": self.default_input_size,
                "onnxruntime": self.ort_version, "providers": self.providers, "threads": self.threads,
                "directory": os.fspath(self.directory)}  # fmt: skip
