"""icmformer: iCMFormer (ICCVW 2023) re-implemented as a tested, reproducible paper artifact.

Public API (imported lazily so ``import icmformer`` is cheap)::

    icmformer.create_model(name, pretrained=False, checkpoint=None, pretrained_backbone=None, **overrides)
    icmformer.list_models(pretrained=False)
    icmformer.load_checkpoint(path) / icmformer.save_checkpoint(model, path)
    icmformer.Predictor(model)
    icmformer.evaluate_sample(gt_mask, predict_fn, max_clicks=20)
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "create_model": "icmformer.models.factory",
    "list_models": "icmformer.models.factory",
    "load_checkpoint": "icmformer.models.factory",
    "save_checkpoint": "icmformer.models.checkpoint",
    "Predictor": "icmformer.evaluation.predictor",
    "evaluate_sample": "icmformer.evaluation.loop",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'icmformer' has no attribute {name!r}")


def __dir__():
    return __all__
