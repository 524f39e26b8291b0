"""Model registry: names -> typed configs (building and loading models: :mod:`icmformer.models.factory`).

=============================  =====================================================================
name                           what it is
=============================  =====================================================================
icmformer_vit_base_448         the paper's ViT-B@448 (6 shared + 3 cross + 6 blocks, SimpleFPN)
icmformer_vit_large_448        official ViT-L config (12 shared + 5 cross + 12, neck 192..1536)
icmformer_vit_huge_448         official ViT-H config (patch 14, 16 shared + 6 cross + 16)
icmformer_swin_base_384        the paper's Swin-B@384: 4 cross blocks (paper text, Table 3), window 12
icmformer_swin_small_224       Swin-S@224: 8 cross blocks (official), window 7 (official SBD config)
icmformer_vit_tiny_224         a small plain model for CPU demos and tests (not in the paper)
icmformer_vit_demo_224         a CPU demo model: tiny ViT + conv stem at 224 px (not in the paper)
icmformer_vit_demo_320         the shipped CPU demo model: the same network at 320 px (not in the paper)
icmformer_swin_tiny_224        a small hierarchical model for CPU demos and tests (not in the paper)
=============================  =====================================================================
"""
from __future__ import annotations

from typing import Any

from icmformer.models.config import ICMFormerConfig

_SWIN = dict(backbone="swin", patch_size=4, depths=(2, 2, 18, 2), shared_stages=2, cross_num_heads=8, drop_path_rate=0.2)

#: the demo network (conv stem + 6 blocks, global attention), registered at two input sizes
_DEMO = dict(embed_dim=192, depth=6, num_heads=3, window_size=None, num_cross_blocks=1,
             neck_dims=(32, 64, 128, 256), head_channels=64, stem="conv", stem_channels=64)  # fmt: skip

MODEL_CONFIGS: dict[str, ICMFormerConfig] = {
    "icmformer_vit_base_448": ICMFormerConfig(),
    "icmformer_vit_large_448": ICMFormerConfig(embed_dim=1024, depth=24, num_heads=16, neck_dims=(192, 384, 768, 1536)),
    "icmformer_vit_huge_448": ICMFormerConfig(
        patch_size=14, embed_dim=1280, depth=32, num_heads=16, window_size=16, neck_dims=(240, 480, 960, 1920)
    ),
    "icmformer_swin_base_384": ICMFormerConfig(
        **_SWIN, img_size=384, embed_dim=128, stage_heads=(4, 8, 16, 32), window_size=12, num_cross_blocks=4, head_channels=256
    ),
    "icmformer_swin_small_224": ICMFormerConfig(
        **_SWIN, img_size=224, embed_dim=96, stage_heads=(3, 6, 12, 24), window_size=7, num_cross_blocks=8, head_channels=192
    ),
    # small models for CPU demos and tests (not in the paper): global attention, so any input
    # that is a multiple of the patch size works (e.g. 336 for DAVIS)
    "icmformer_vit_tiny_224": ICMFormerConfig(
        img_size=224, embed_dim=192, depth=4, num_heads=3, window_size=None, num_cross_blocks=1,
        neck_dims=(32, 64, 128, 256), head_channels=64,
    ),
    # the shipped CPU demo model (not in the paper): a tiny ViT with a convolutional stem whose
    # 1/4-resolution features join the neck (sharper boundaries), trained from scratch on CPU
    "icmformer_vit_demo_224": ICMFormerConfig(**_DEMO, img_size=224),
    # the same network at 320 px (20x20 tokens over the same crop): trained on 224 px views, run at
    # 320, where boundaries (NoC@90) come out sharper; its weights load into the 224 model and back
    # (the shipped weights: phases 4-5 of the model card)
    "icmformer_vit_demo_320": ICMFormerConfig(**_DEMO, img_size=320),
    "icmformer_swin_tiny_224": ICMFormerConfig(
        **{**_SWIN, "cross_num_heads": 2, "depths": (2, 2, 2, 2)}, img_size=224, embed_dim=32,
        stage_heads=(1, 2, 4, 8), window_size=7, num_cross_blocks=1, head_channels=64,
    ),
}

PAPER_MODELS = ("icmformer_vit_base_448", "icmformer_swin_small_224", "icmformer_swin_base_384")


def list_models() -> list[str]:
    """Names accepted by :func:`~icmformer.models.factory.create_model`."""
    return sorted(MODEL_CONFIGS)


def get_config(name: str, **overrides: Any) -> ICMFormerConfig:
    if name not in MODEL_CONFIGS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return MODEL_CONFIGS[name].replace(**overrides) if overrides else MODEL_CONFIGS[name].validate()


def tiny_overrides(name: str) -> dict[str, Any]:
    """Overrides that shrink registry model ``name`` to a few thousand parameters at 64x64 (or
    56x56 for patch 14) while keeping its structure (windows, shared group, cross blocks): for
    tests and smoke runs."""
    cfg = get_config(name)
    if cfg.backbone == "vit":
        return dict(embed_dim=32, depth=4, num_heads=2, img_size=4 * cfg.patch_size, window_size=2,
                    global_attn_every=2, num_cross_blocks=2, neck_dims=(8, 16, 32, 64), head_channels=16)  # fmt: skip
    return dict(embed_dim=16, depths=(2, 2, 2, 2), stage_heads=(1, 2, 4, 8), img_size=64, window_size=4,
                num_cross_blocks=2, cross_num_heads=2, head_channels=16)  # fmt: skip


def __getattr__(name: str):
    # ``create_model`` lived here before the factory existed; resolved lazily so that this module
    # imports no model-building code (the factory imports the registry, not the other way round)
    if name == "create_model":
        from icmformer.models.factory import create_model

        return create_model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
