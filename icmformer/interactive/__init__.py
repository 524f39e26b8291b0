"""Interactive annotation and attention-map exploration (the logic behind ``notebooks/``).

- :mod:`~icmformer.interactive.session`: :class:`AnnotationSession` (several objects per image,
  undo / reset / next object, export of PNG masks + COCO JSON with RLE + the click list, resume).
- :mod:`~icmformer.interactive.io`: click parsing (``"y,x,+"``, ``[y, x, positive]``), click
  files, image and model loading (an untrained model is announced loudly).
- :mod:`~icmformer.interactive.attention`: cross-attention maps per head and head-averaged for a
  query token, click-branch features (norm, PCA), upsampling.
- :mod:`~icmformer.interactive.visual` / :mod:`~icmformer.interactive.figures`: overlays and
  matplotlib figures.
- :mod:`~icmformer.interactive.widget`: :class:`AnnotationUI`, the ipympl + ipywidgets annotator
  (imported on use: it needs ipywidgets and matplotlib).
"""
from __future__ import annotations

from icmformer.interactive.attention import (
    AttentionResult,
    click_token_norm,
    click_token_pca,
    normalize_map,
    query_maps,
    run_attention,
    token_index,
    upsample_map,
)
from icmformer.interactive.io import (
    UntrainedModelWarning,
    demo_image,
    load_image,
    load_model,
    parse_click,
    parse_clicks,
    parse_objects,
    read_clicks_file,
    resolve_path,
)
from icmformer.interactive.session import AnnotatedObject, AnnotationSession, ExportedFiles
from icmformer.interactive.visual import colorize, draw_clicks, object_color, overlay_heatmap, overlay_masks

__all__ = [
    "AnnotatedObject",
    "AnnotationSession",
    "AnnotationUI",
    "AttentionResult",
    "ExportedFiles",
    "UntrainedModelWarning",
    "click_token_norm",
    "click_token_pca",
    "colorize",
    "demo_image",
    "draw_clicks",
    "load_image",
    "load_model",
    "normalize_map",
    "object_color",
    "overlay_heatmap",
    "overlay_masks",
    "parse_click",
    "parse_clicks",
    "parse_objects",
    "query_maps",
    "read_clicks_file",
    "resolve_path",
    "run_attention",
    "token_index",
    "upsample_map",
]


def __getattr__(name: str):
    if name == "AnnotationUI":
        from icmformer.interactive.widget import AnnotationUI

        return AnnotationUI
    raise AttributeError(f"module 'icmformer.interactive' has no attribute {name!r}")
