"""Inference variants of a model for the benchmark and the opt-in fast CPU mode.

- :class:`NaiveForward`: the official way, a full forward pass (image branch included) at every
  click, fp32, eager, explicit-softmax attention, the head's official fusion order. It implements
  ``encode_image``/``predict_clicks`` so the evaluation predictor can drive it unchanged; its
  ``encode_image`` only keeps the image.
- :func:`quantize_int8`: the fast CPU mode, int8 dynamic quantisation of every ``nn.Linear``
  (weights int8, activations quantised per batch at run time). Attention matmuls, convolutions and
  norms stay fp32. Opt-in: it changes the logits slightly (the benchmark and the evaluation report
  how much it changes NoC).
- :class:`AutocastBf16` / :func:`to_bf16`: bf16 autocast (oneDNN; AMX tiles where the CPU has
  them). :func:`to_bf16` is the CPU fast mode ``bf16``: the Linear and Conv weights are cast to
  bf16 once, so autocast no longer re-casts ~86 M fp32 weights at every call. The weights are
  rounded as autocast rounds them. The segmentation head (:class:`Float32Head`) stays fp32: it
  is a few % of the FLOPs and half of the bf16 logit error (on 4 GrabCut crops of the shipped
  demo model, max |logit diff| to fp32 0.034 -> 0.015, mean 0.0037 -> 0.0022).

:data:`FAST_MODES` names the CPU fast modes; :func:`make_fast` builds one.
"""
from __future__ import annotations

import copy
import warnings

import torch
from torch import nn


class NaiveForward(nn.Module):
    """Full forward per click (the official evaluation's cost), for side-by-side measurements."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = copy.deepcopy(model).eval()
        self.model.set_fused_attention(False)
        self.model.head.low_res_fusion = False

    @property
    def default_input_size(self) -> int:
        return self.model.default_input_size

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        return image

    def predict_clicks(self, image: torch.Tensor, clicks: torch.Tensor, prev_mask: torch.Tensor | None = None,
                       allow_outside_clicks: bool = False) -> torch.Tensor:  # fmt: skip
        state = self.model.encode_image(image)
        return self.model.predict_clicks(state, clicks, prev_mask, allow_outside_clicks=allow_outside_clicks)


def quantize_int8(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with int8 dynamically quantised Linear layers (CPU only)."""
    if any(p.device.type != "cpu" for p in model.parameters()):
        raise ValueError("int8 dynamic quantisation runs on the CPU; move the model to the CPU first")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notice (the API still works in 2.14)
        from torch.ao.quantization import quantize_dynamic

        fast = quantize_dynamic(copy.deepcopy(model).eval(), {nn.Linear}, dtype=torch.qint8)
    fast.quantized = "int8-dynamic"
    return fast


class Float32Head(nn.Module):
    """A model's segmentation head run in fp32 inside a bf16 autocast region (its input features
    are cast up; its weights stay fp32). ``low_res_fusion`` is the wrapped head's."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head.float()

    @property
    def low_res_fusion(self) -> bool:
        return self.head.low_res_fusion

    @low_res_fusion.setter
    def low_res_fusion(self, value: bool) -> None:
        self.head.low_res_fusion = value

    def forward(self, feats):
        with torch.autocast(feats[0].device.type, enabled=False):
            return self.head([f.float() for f in feats])


class AutocastBf16(nn.Module):
    """Runs a model's ``encode_image`` / ``predict_clicks`` under bf16 autocast and returns fp32 logits.

    ``precast=True`` (CPU fast mode, see :func:`to_bf16`) stores the Linear / Conv weights of a
    copy of the model in bf16; ``False`` wraps the model as it is (its weights are cast at every
    call, as plain autocast does). ``fp32_head=True`` (with ``precast``) keeps the segmentation
    head in fp32 (:class:`Float32Head`).
    """

    def __init__(self, model: nn.Module, precast: bool = False, fp32_head: bool = False) -> None:
        super().__init__()
        if fp32_head and not precast:
            raise ValueError("fp32_head needs precast=True (a copy of the model to change)")
        if precast:
            model = copy.deepcopy(model).eval()
            head = getattr(model, "head", None) if fp32_head else None
            if fp32_head and head is None:
                raise ValueError("fp32_head: the model has no .head")
            kept = set(head.modules()) if head is not None else set()
            for m in model.modules():
                if isinstance(m, (nn.Linear, nn.Conv2d)) and m not in kept:
                    m.to(torch.bfloat16)
            if head is not None:
                model.head = Float32Head(head)
        self.model = model
        self.precast = bool(precast)
        self.fp32_head = bool(fp32_head)

    @property
    def default_input_size(self) -> int:
        return self.model.default_input_size

    def encode_image(self, image: torch.Tensor):
        with torch.autocast(image.device.type, dtype=torch.bfloat16):
            return self.model.encode_image(image)

    def predict_clicks(self, state, clicks: torch.Tensor, prev_mask: torch.Tensor | None = None,
                       allow_outside_clicks: bool = False) -> torch.Tensor:  # fmt: skip
        with torch.autocast(clicks.device.type, dtype=torch.bfloat16):
            out = self.model.predict_clicks(state, clicks, prev_mask, allow_outside_clicks=allow_outside_clicks)
        return out.float()

    def forward(self, image: torch.Tensor, clicks: torch.Tensor, prev_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.predict_clicks(self.encode_image(image), clicks, prev_mask)


def to_bf16(model: nn.Module) -> AutocastBf16:
    """The CPU fast mode ``bf16``: a copy of ``model`` with fused attention, low-resolution head
    fusion and bf16 Linear / Conv weights, run under bf16 autocast, the segmentation head in fp32
    (``model`` is left unchanged)."""
    if any(p.device.type != "cpu" for p in model.parameters()):
        raise ValueError("the bf16 fast mode runs on the CPU; move the model to the CPU first")
    fast = AutocastBf16(model, precast=True, fp32_head=hasattr(model, "head"))
    if hasattr(fast.model, "set_fused_attention"):
        fast.model.set_fused_attention(True)
    if hasattr(getattr(fast.model, "head", None), "low_res_fusion"):
        fast.model.head.low_res_fusion = True
    fast.eval()
    fast.quantized = "bf16-autocast"
    return fast


FAST_MODES = {"int8": quantize_int8, "bf16": to_bf16}


def make_fast(model: nn.Module, mode: str) -> nn.Module:
    """The CPU fast mode ``mode`` (one of :data:`FAST_MODES`) of ``model``, as a new module."""
    if mode not in FAST_MODES:
        raise ValueError(f"unknown fast mode {mode!r}; choose from {', '.join(FAST_MODES)}")
    return FAST_MODES[mode](model)
