"""Parameters and FLOPs, counted two ways (paper Table 3).

**Ours**: parameters that take part in the forward pass (our models hold no unused modules: no cls
token, classifier or x2/x4 up-convs; a test checks that every parameter receives a gradient) and
FLOPs = 2 x multiply-accumulates of every matrix product and convolution, attention matmuls
included, for one forward pass with one click. Counted with PyTorch's ``FlopCounterMode`` on the
meta device (no memory, no compute), so full-size models count in a second.

**Paper convention**: the paper counted with ``thop`` (0.1.1; FLOPs = 2 x thop MACs). thop counts
only modules with a rule (Linear, Conv, ConvTranspose - at 4x its true cost for 2x2/stride-2 -,
LayerNorm, ``nn.Softmax``), not functional ops (attention matmuls, interpolation, the click
encoder), and counts the parameters of executed modules with a rule (so no position embedding,
relative-position tables or GroupNorm). We run thop on our model with one extra rule: our
cross-attention module is counted as the official ``MHAttention`` executes it (the full q/k/v
projection of *both* inputs, half of it discarded), because that is what the paper's number
contains; ``thop_raw`` reports thop on our lean module as well. Swin window attention uses the
explicit-softmax path for this count, as the official code does.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

#: Table 3 of the paper (params in M, FLOPs in G), keyed by registry name and input side.
PAPER_TABLE3 = {
    ("icmformer_vit_base_448", 448): (124.81, 297.54),
    ("icmformer_swin_base_384", 384): (104.25, 153.78),
    # labelled 224 in the paper, but only reproduced at a 384 input with window 7 (see README)
    ("icmformer_swin_small_224", 224): (68.14, 106.74),
    ("icmformer_swin_small_224", 384): (68.14, 106.74),  # where the paper's Swin-S row reproduces
}


@dataclass
class Complexity:
    model: str
    input_size: tuple[int, int]
    params_m: float
    gflops: float
    paper_params_m: float
    paper_gflops: float
    thop_raw_gflops: float
    reported_params_m: float | None = None
    reported_gflops: float | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        return d


class _ForwardFromMaps(nn.Module):
    """``(image, click maps) -> logits``: the model's forward without the (data-dependent) click checks."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
        return self.model.predict_from_maps(self.model.encode_image(image), maps)


def _meta_model(name: str, **overrides):
    from icmformer.models.registry import create_model

    with torch.device("meta"):
        return create_model(name, **overrides).eval()


def _inputs(size: tuple[int, int], device: str | torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    h, w = size
    image = torch.zeros(1, 3, h, w, device=device)
    maps = torch.zeros(1, 3, h, w, device=device)
    return image, maps


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, size: tuple[int, int]) -> int:
    """FLOPs (2 x MACs of matmuls, convolutions and attention) of one forward pass."""
    from torch.utils.flop_counter import FlopCounterMode

    image, maps = _inputs(size, model.device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        _ForwardFromMaps(model)(image, maps)
    return int(counter.get_total_flops())


def _count_official_mhattention(module: nn.Module, inputs: tuple, output) -> None:
    # official MHAttention(x, y): qkv(x) and qkv(y) in full (3C outputs each), then proj on the queries
    q_in, kv_in = inputs[0], inputs[1]
    c = q_in.shape[-1]
    nq, nk = q_in.numel() // c, kv_in.numel() // c
    macs = nk * c * 3 * c + nq * c * 3 * c + nq * c * c
    module.total_ops += torch.DoubleTensor([macs])


def encode_decode_flops(model: nn.Module, size: tuple[int, int]) -> tuple[int, int]:
    """FLOPs of the image branch (``encode_image``: run once per crop by our predictor) and of the
    rest (``predict_from_maps``: run at every click), counted on a meta-device copy of ``model``.

    ``decode / (encode + decode)`` is the floor of an exact mode's seconds per click relative to the
    naive full forward at the same FLOP rate (the encode cached at every click)."""
    import copy

    from torch.utils.flop_counter import FlopCounterMode

    meta = copy.deepcopy(model).to("meta").eval() if model.device.type != "meta" else model
    image, maps = _inputs(size, "meta")
    with torch.no_grad():
        with FlopCounterMode(display=False) as enc:
            state = meta.encode_image(image)
        with FlopCounterMode(display=False) as dec:
            meta.predict_from_maps(state, maps)
    return int(enc.get_total_flops()), int(dec.get_total_flops())


def thop_count(model: nn.Module, size: tuple[int, int], official_attention: bool = True) -> tuple[float, float]:
    """(MACs, params) as thop 0.1.1 counts them (see the module docstring)."""
    import contextlib
    import io
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from thop import profile

    from icmformer.models.cross import CrossAttention

    custom = {CrossAttention: _count_official_mhattention} if official_attention else {}
    fused = {m: m.fused_attn for m in model.modules() if hasattr(m, "fused_attn")}
    if model.config.backbone == "swin":
        from timm.models.swin_transformer import WindowAttention

        for m in fused:
            if isinstance(m, WindowAttention):
                m.fused_attn = False  # the official Swin runs nn.Softmax, which thop counts
    image, maps = _inputs(size, model.device)
    low_res = model.head.low_res_fusion
    model.head.low_res_fusion = False  # count the official module calls
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            macs, params = profile(_ForwardFromMaps(model), inputs=(image, maps), custom_ops=custom, verbose=False)
    finally:
        model.head.low_res_fusion = low_res
        for m, value in fused.items():
            m.fused_attn = value
    return float(macs), float(params)


def complexity(name: str, size: tuple[int, int] | None = None, **overrides) -> Complexity:
    """Both counts for registry model ``name`` at input ``size`` (default: its training size)."""
    model = _meta_model(name, **overrides)
    if size is None:
        size = (model.default_input_size,) * 2
    size = (int(size[0]), int(size[1]))
    macs, thop_params = thop_count(model, size, official_attention=True)
    raw_macs, _ = thop_count(model, size, official_attention=False)
    reported = PAPER_TABLE3.get((name, size[0])) if size[0] == size[1] and not overrides else None
    return Complexity(
        model=name,
        input_size=size,
        params_m=count_parameters(model) / 1e6,
        gflops=count_flops(model, size) / 1e9,
        paper_params_m=thop_params / 1e6,
        paper_gflops=2 * macs / 1e9,
        thop_raw_gflops=2 * raw_macs / 1e9,
        reported_params_m=reported[0] if reported else None,
        reported_gflops=reported[1] if reported else None,
    )
