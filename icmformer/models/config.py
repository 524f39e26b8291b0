"""The typed configuration of an iCMFormer model.

Every registry entry is an :class:`ICMFormerConfig`; ``create_model(name, **overrides)`` replaces
fields. Unknown fields and invalid combinations raise ``ValueError`` naming the field.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from icmformer.models.cross import VARIANTS


def linspace(stop: float, n: int) -> list[float]:
    """``n`` evenly spaced values from 0 to ``stop`` (stochastic-depth rates), without torch."""
    return [stop * i / (n - 1) for i in range(n)] if n > 1 else [0.0] * n


@dataclass(frozen=True)
class ICMFormerConfig:
    """Architecture of one iCMFormer model.

    Plain ViT fields: ``patch_size``, ``embed_dim``, ``depth``, ``num_heads``, ``window_size``
    (window side in tokens; the official 14 = 224/16), ``global_attn_every`` (1-based block ``i``
    uses global attention iff ``i % global_attn_every == 0``; ``None`` = the official rule: 6 for
    depth 12, else ``depth // 4``), ``shared_depth`` (blocks in the shared first group; ``None`` =
    ``depth // 2``), ``neck_dims`` (SimpleFPN outputs).

    Swin fields: ``embed_dim``, ``depths``, ``stage_heads``, ``window_size`` (Swin window side),
    ``shared_stages`` (stages shared by image and clicks; the cross blocks run at the input of
    stage ``shared_stages``; default 2 = at 1/16 with ``4 * embed_dim`` channels).

    Cross-modality fields: ``cross_modality`` (False = the paper's base model: shared first
    group, fusion by addition, no cross blocks), ``cross_variant`` (one of ``X,Y,XY``, ``X,Y,YX``,
    ``X,XY``, ``X,YX``), ``num_cross_blocks`` (``None`` = ViT ``depth // 6 + 1``; Swin needs a value),
    ``cross_num_heads`` (``None`` = ViT ``num_heads``, Swin 8), ``cross_act`` (``gelu`` as the
    official code, ``relu`` as the paper's text).

    Demo-model fields (not in the paper): ``stem`` (``patch``: the paper's linear patch
    embedding; ``conv``: a convolutional stem whose 1/4-resolution features also join the neck's
    1/4 map, ViT with patch 16 only) and ``stem_channels`` (its width).
    """

    backbone: str = "vit"
    img_size: int = 448
    patch_size: int = 16
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    depths: tuple[int, ...] = (2, 2, 18, 2)
    stage_heads: tuple[int, ...] = (4, 8, 16, 32)
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    window_size: int | None = 14
    global_attn_every: int | None = None
    shared_depth: int | None = None
    shared_stages: int = 2
    cross_modality: bool = True
    cross_variant: str = "X,Y,XY"
    num_cross_blocks: int | None = None
    cross_num_heads: int | None = None
    cross_act: str = "gelu"
    neck_dims: tuple[int, ...] = (128, 256, 512, 1024)
    head_channels: int = 256
    head_dropout: float = 0.1
    drop_path_rate: float = 0.0
    click_radius: float = 5.0
    stem: str = "patch"
    stem_channels: int = 64
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    # ----------------------------------------------------------------------------- derived
    @property
    def resolved_shared_depth(self) -> int:
        return self.depth // 2 if self.shared_depth is None else self.shared_depth

    @property
    def resolved_global_every(self) -> int:
        if self.global_attn_every is not None:
            return self.global_attn_every
        return 6 if self.depth == 12 else max(1, self.depth // 4)

    @property
    def resolved_num_cross_blocks(self) -> int:
        if not self.cross_modality:
            return 0
        if self.num_cross_blocks is not None:
            return self.num_cross_blocks
        if self.backbone == "vit":
            return self.depth // 6 + 1
        raise ValueError("num_cross_blocks must be set for a Swin model")

    @property
    def cross_dim(self) -> int:
        if self.backbone == "vit":
            return self.embed_dim
        return self.embed_dim * 2**self.shared_stages

    @property
    def resolved_cross_heads(self) -> int:
        if self.cross_num_heads is not None:
            return self.cross_num_heads
        return self.num_heads if self.backbone == "vit" else 8

    @property
    def feature_channels(self) -> tuple[int, ...]:
        """Channels of the four maps the head receives."""
        if self.backbone == "vit":
            return tuple(self.neck_dims)
        return tuple(self.embed_dim * 2**i for i in range(len(self.depths)))

    # ----------------------------------------------------------------------------- checks
    def validate(self) -> "ICMFormerConfig":
        def bad(name: str, why: str) -> ValueError:
            return ValueError(f"invalid model config: {name}={getattr(self, name)!r}: {why}")

        if self.backbone not in ("vit", "swin"):
            raise bad("backbone", "choose 'vit' or 'swin'")
        if self.cross_variant not in VARIANTS:
            raise bad("cross_variant", f"choose from {', '.join(VARIANTS)}")
        if self.cross_act not in ("gelu", "relu"):
            raise bad("cross_act", "choose 'gelu' or 'relu'")
        if self.embed_dim <= 0 or self.img_size <= 0 or self.patch_size <= 0:
            raise ValueError("invalid model config: embed_dim, img_size and patch_size must be positive")
        if self.stem not in ("patch", "conv"):
            raise bad("stem", "choose 'patch' (the paper's patch embedding) or 'conv'")
        if self.stem == "conv":
            if self.backbone != "vit" or self.patch_size != 16:
                raise bad("stem", "the conv stem needs a ViT backbone with patch_size 16")
            if self.stem_channels < 2 or self.stem_channels % 2:
                raise bad("stem_channels", "must be an even number >= 2")
        if self.backbone == "vit":
            if self.embed_dim % self.num_heads:
                raise bad("num_heads", f"embed_dim {self.embed_dim} is not divisible by it")
            if self.img_size % self.patch_size:
                raise bad("img_size", f"not a multiple of patch_size {self.patch_size}")
            if not 0 <= self.resolved_shared_depth <= self.depth:
                raise bad("shared_depth", f"must lie in [0, depth={self.depth}]")
            if self.window_size is not None and self.window_size <= 0:
                raise bad("window_size", "must be positive or None")
            if self.resolved_global_every <= 0:
                raise bad("global_attn_every", "must be positive")
            if len(self.neck_dims) != 4:
                raise bad("neck_dims", "SimpleFPN needs four output widths")
        else:
            if len(self.depths) != 4 or len(self.stage_heads) != 4:
                raise ValueError("invalid model config: Swin needs four stages (depths and stage_heads of length 4)")
            for i, h in enumerate(self.stage_heads):
                if (self.embed_dim * 2**i) % h:
                    raise bad("stage_heads", f"stage {i} width {self.embed_dim * 2**i} is not divisible by {h}")
            if not 1 <= self.shared_stages <= 3:
                raise bad("shared_stages", "must be 1, 2 or 3")
            if self.window_size is None or self.window_size <= 0:
                raise bad("window_size", "Swin needs a positive window size")
            if self.cross_modality and self.num_cross_blocks is None:
                raise bad("num_cross_blocks", "must be set for a Swin model")
        if self.cross_modality:
            if self.resolved_num_cross_blocks < 1:
                raise bad("num_cross_blocks", "must be >= 1 with cross_modality=True (or set cross_modality=False)")
            if self.cross_dim % self.resolved_cross_heads:
                raise bad("cross_num_heads", f"cross-block width {self.cross_dim} is not divisible by it")
        return self

    def replace(self, **overrides: Any) -> "ICMFormerConfig":
        names = {f.name for f in dataclasses.fields(self)} - {"extra"}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ValueError(f"unknown model override(s) {unknown}; valid fields: {', '.join(sorted(names))}")
        fixed = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
        return dataclasses.replace(self, **fixed).validate()

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("extra")
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}
