"""Overlays for interactive annotation and attention maps (numpy only; matplotlib for colour maps).

All functions take and return ``H x W x 3`` uint8 RGB images, so results can be shown with any
viewer, saved with PIL, or compared in tests.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Ten saturated, well-separated colours (visible on natural images), one per object, cycled.
OBJECT_COLORS: tuple[tuple[int, int, int], ...] = (
    (255, 200, 0), (0, 210, 255), (255, 60, 200), (120, 255, 60), (255, 110, 40),
    (150, 100, 255), (0, 255, 170), (255, 255, 255), (255, 0, 80), (40, 90, 255),
)  # fmt: skip
POSITIVE_COLOR = (40, 220, 60)
NEGATIVE_COLOR = (235, 40, 40)


def object_color(k: int) -> tuple[int, int, int]:
    """The colour of object ``k`` (0-based)."""
    return OBJECT_COLORS[k % len(OBJECT_COLORS)]


def _check_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be H x W x 3 uint8 RGB, got shape {image.shape} dtype {image.dtype}")
    return image


def mask_edge(mask: np.ndarray) -> np.ndarray:
    """The pixels of a bool mask that have a 4-neighbour outside it (the one-pixel outline)."""
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return mask & ~inner


def overlay_masks(
    image: np.ndarray,
    masks: Sequence[np.ndarray | None],
    colors: Sequence[tuple[int, int, int]] | None = None,
    alpha: float | Sequence[float] = 0.5,
    outline: bool = True,
) -> np.ndarray:
    """Blend each mask (bool ``H x W``; ``None`` skipped) onto ``image`` in its colour; later masks
    lie on top. With ``outline`` the mask boundary is drawn opaque."""
    out = _check_rgb(image).astype(np.float32)
    h, w = out.shape[:2]
    alphas = [alpha] * len(masks) if np.isscalar(alpha) else list(alpha)
    for k, m in enumerate(masks):
        if m is None:
            continue
        m = np.asarray(m, dtype=bool)
        if m.shape != (h, w):
            raise ValueError(f"mask {k} has shape {m.shape}, the image is {h}x{w}")
        color = np.asarray(colors[k] if colors is not None else object_color(k), np.float32)
        a = float(alphas[k])
        out[m] = (1 - a) * out[m] + a * color
        if outline and m.any():
            out[mask_edge(m)] = color
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def draw_clicks(image: np.ndarray, clicks, radius: int | None = None) -> np.ndarray:
    """Draw clicks as filled discs with a white rim (green positive, red negative)."""
    out = _check_rgb(image).copy()
    h, w = out.shape[:2]
    r = radius if radius is not None else max(3, int(round(min(h, w) / 80)))
    yy, xx = np.ogrid[0:h, 0:w]
    for c in clicks:
        y, x = c.coords
        d2 = (yy - y) ** 2 + (xx - x) ** 2
        out[d2 <= (r + 1) ** 2] = (255, 255, 255)
        out[d2 <= r**2] = POSITIVE_COLOR if c.is_positive else NEGATIVE_COLOR
    return out


def colorize(values: np.ndarray, cmap: str = "jet", vmin: float | None = None, vmax: float | None = None) -> np.ndarray:
    """A 2-D map -> ``H x W x 3`` uint8 through a matplotlib colour map (``vmin``/``vmax``
    default to the map's range)."""
    from matplotlib import colormaps

    v = np.asarray(values, dtype=np.float32)
    if v.ndim != 2:
        raise ValueError(f"colorize needs a 2-D map, got shape {v.shape}")
    lo = float(np.min(v)) if vmin is None else float(vmin)
    hi = float(np.max(v)) if vmax is None else float(vmax)
    scaled = (v - lo) / (hi - lo) if hi > lo else np.zeros_like(v)
    rgba = colormaps[cmap](np.clip(scaled, 0, 1))
    return (rgba[..., :3] * 255 + 0.5).astype(np.uint8)


def overlay_heatmap(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5, cmap: str = "jet", vmin: float = 0.0, vmax: float | None = None) -> np.ndarray:
    """Blend a colour-mapped ``H x W`` map onto ``image`` (default range ``[0, max]``)."""
    image = _check_rgb(image)
    heat = np.asarray(heat, dtype=np.float32)
    if heat.shape != image.shape[:2]:
        raise ValueError(f"heat map has shape {heat.shape}, the image is {image.shape[:2]} (upsample it first)")
    colored = colorize(heat, cmap, vmin, vmax).astype(np.float32)
    return np.clip((1 - alpha) * image + alpha * colored + 0.5, 0, 255).astype(np.uint8)
