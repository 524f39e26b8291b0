"""Matplotlib figures of :class:`~icmformer.interactive.attention.AttentionResult` (for the
attention notebook). Figures are ``matplotlib.figure.Figure`` objects made without pyplot, so they
do not depend on the active backend; show them with ``display(fig)`` or save with ``savefig``."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from icmformer.interactive.attention import AttentionResult, normalize_map, upsample_map
from icmformer.interactive.visual import draw_clicks, overlay_heatmap, overlay_masks


def _figure(rows: int, cols: int, panel: float = 2.2):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(panel * cols, panel * rows + 0.6), layout="constrained")
    axes = np.atleast_2d(fig.subplots(rows, cols, squeeze=False))
    for ax in axes.flat:
        ax.set_axis_off()
    return fig, axes


def _query_text(res: AttentionResult, click_index: int) -> str:
    c = res.clicks[click_index]
    q = res.query_token(click_index)
    r, col = divmod(q, res.grid[1])
    sign = "+" if c.is_positive else "-"
    idx = click_index % len(res.clicks) + 1
    return f"query: click {idx} ({sign}) at y={c.coords[0]}, x={c.coords[1]} -> token ({r}, {col}) of {res.grid[0]}x{res.grid[1]}"


def stream_text(res: AttentionResult, direction: str = "row") -> str:
    """What a map shows, in words, for the model's variant and the reading direction."""
    if res.query_stream == "clicks":
        what = "where the click token looks in the image" if direction == "row" else "which click tokens look at the image token under the click"
    elif res.query_stream == "image":
        what = "which click tokens the image token under the click looks at" if direction == "row" else "which image tokens look at the click token"
    else:
        return "no cross-modality blocks"
    return f"{res.variant}: {what}"


def prediction_panel(res: AttentionResult, alpha: float = 0.5) -> np.ndarray:
    """The image with the predicted mask and the clicks."""
    return draw_clicks(overlay_masks(res.image, [res.mask], colors=[(255, 200, 0)], alpha=alpha), res.clicks)


def attention_panel(res: AttentionResult, maps: np.ndarray, click_index: int = -1, mode: str = "bilinear", alpha: float = 0.55) -> np.ndarray:
    """A ``gh x gw`` map, max-normalised, upsampled and blended onto the image, with the query click."""
    heat = upsample_map(normalize_map(maps), res.image_size, mode)
    return draw_clicks(overlay_heatmap(res.image, heat, alpha=alpha, vmin=0.0, vmax=1.0), [res.clicks[click_index]])


def plot_attention(
    res: AttentionResult,
    click_index: int = -1,
    direction: str = "row",
    mode: str = "bilinear",
    max_heads: int | None = None,
):
    """Rows: cross-modality blocks; columns: each head, then the head average."""
    if not res.num_blocks:
        fig, axes = _figure(1, 1)
        axes[0, 0].text(0.5, 0.5, "this model has no cross-modality blocks", ha="center", va="center")
        return fig
    heads = res.cross_attention[0].shape[0]
    shown = heads if max_heads is None else min(heads, max_heads)
    fig, axes = _figure(res.num_blocks, shown + 1)
    for b in range(res.num_blocks):
        maps = res.maps(b, click_index, direction)
        for hd in range(shown):
            axes[b, hd].imshow(attention_panel(res, maps[hd], click_index, mode))
            axes[b, hd].set_title(f"block {b + 1} head {hd + 1}", fontsize=8)
        axes[b, shown].imshow(attention_panel(res, maps.mean(axis=0), click_index, mode))
        axes[b, shown].set_title(f"block {b + 1} mean", fontsize=8, fontweight="bold")
    title = f"{res.label + ': ' if res.label else ''}cross-attention ({stream_text(res, direction)})\n{_query_text(res, click_index)}"
    fig.suptitle(title, fontsize=9)
    return fig


def plot_click_features(res: AttentionResult, mode: str = "nearest"):
    """The prediction, the norm of the click-branch tokens and their first three principal
    components (as RGB), on the image."""
    fig, axes = _figure(1, 3, panel=3.0)
    axes[0, 0].imshow(prediction_panel(res))
    axes[0, 0].set_title(f"prediction ({int(res.mask.sum())} px)", fontsize=9)
    norm = upsample_map(res.click_token_norm(), res.image_size, mode)
    axes[0, 1].imshow(draw_clicks(overlay_heatmap(res.image, norm, alpha=0.6, cmap="viridis", vmin=float(norm.min())), res.clicks))
    axes[0, 1].set_title("click tokens: L2 norm", fontsize=9)
    pca = res.click_token_pca(3)
    rgb = np.stack([upsample_map(pca[..., i], res.image_size, mode) for i in range(3)], axis=2)
    blend = (0.35 * res.image.astype(np.float32) + 0.65 * 255 * rgb + 0.5).clip(0, 255).astype(np.uint8)
    axes[0, 2].imshow(draw_clicks(blend, res.clicks))
    axes[0, 2].set_title("click tokens: PCA (RGB = PC1-3)", fontsize=9)
    if res.label:
        fig.suptitle(res.label, fontsize=9)
    return fig


def plot_comparison(results: Sequence[AttentionResult], click_index: int = -1, direction: str = "row", mode: str = "bilinear"):
    """One row per result: prediction, head-averaged attention of each block, click-token norm."""
    blocks = max(r.num_blocks for r in results)
    fig, axes = _figure(len(results), blocks + 2)
    for i, res in enumerate(results):
        axes[i, 0].imshow(prediction_panel(res))
        axes[i, 0].set_title(f"{res.label or res.model_name}\nprediction", fontsize=8)
        for b in range(res.num_blocks):
            axes[i, 1 + b].imshow(attention_panel(res, res.mean_map(b, click_index, direction), click_index, mode))
            axes[i, 1 + b].set_title(f"{res.variant} block {b + 1} mean", fontsize=8)
        norm = upsample_map(res.click_token_norm(), res.image_size, "nearest")
        axes[i, blocks + 1].imshow(overlay_heatmap(res.image, norm, alpha=0.6, cmap="viridis", vmin=float(norm.min())))
        axes[i, blocks + 1].set_title("click-token norm", fontsize=8)
    fig.suptitle(_query_text(results[0], click_index), fontsize=9)
    return fig
