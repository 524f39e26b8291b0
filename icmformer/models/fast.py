"""Inference variants of a model for the benchmark and the opt-in fast CPU mode.

- :class:`NaiveForward`: the official way, a full forward pass (image branch included) at every
  click, fp32, eager, explicit-softmax attention, the head's official fusion order. It implements
  ``encode_image``/``predict_clicks`` so the evaluation predictor can drive it unchanged; its
  ``encode_image`` only keeps the image.
- :func:`quantize_int8`: the fast CPU mode, int8 dynamic quantisation of every ``nn.Linear``
  (weights int8, activations quantised per batch at run time). Attention matmuls, convolutions and
  norms stay fp32. Opt-in: it changes the logits slightly (the benchmark and the evaluation report
  how much it changes NoC).
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
