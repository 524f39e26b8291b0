"""Cross-attention maps and click-branch features of an iCMFormer prediction.

:func:`run_attention` runs a model on a whole image (resized to the model's input size, no zoom-in,
no flip, so the token grid covers the whole image) for a list of clicks, feeding each prediction
back as the previous mask as in interactive use, and keeps from the last pass:

- ``cross_attention``: one ``heads x N_query x N_key`` array per cross-modality block (dense over
  the token grid; a windowed block has zeros across windows),
- ``click_tokens``: the click-branch tokens after the cross blocks (``N x C``),
- the probability map at the image's size.

With the default variant ``X,Y,XY`` the queries come from the click tokens and the keys from the
image tokens: row ``q`` of a block's attention (``direction="row"``) says where, in the image,
the click token ``q`` looks. With ``X,Y,YX`` / ``X,YX`` the image tokens are the queries: the row of
the click's token says which click tokens the image token under the click looks at, and
``direction="column"`` (which queries look at the token) is the other reading. Each row of a
softmax attention sums to 1, so a per-head row map sums to 1 over the grid; a column map is
divided by its sum to make it a distribution as well.

Maps are ``heads x gh x gw`` on the token grid; :func:`upsample_map` brings them to the image
size (``mode="nearest"`` keeps token blocks, windows stay exact) and
:func:`~icmformer.interactive.visual.overlay_heatmap` blends them onto the image.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from icmformer.evaluation.clicker import Click
from icmformer.evaluation.protocol import PRED_THRESHOLD
from icmformer.interactive.io import check_clicks_inside, parse_clicks


@dataclass
class AttentionResult:
    """What :func:`run_attention` keeps from the last pass (batch item 0, numpy, on the CPU)."""

    image: np.ndarray
    clicks: list[Click]
    prob: np.ndarray
    input_size: tuple[int, int]
    grid: tuple[int, int]
    cross_attention: list[np.ndarray]
    click_tokens: np.ndarray
    variant: str
    query_stream: str
    model_name: str | None = None
    label: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.image.shape[0]), int(self.image.shape[1])

    @property
    def num_blocks(self) -> int:
        return len(self.cross_attention)

    @property
    def mask(self) -> np.ndarray:
        return self.prob > PRED_THRESHOLD

    def query_token(self, click_index: int = -1) -> int:
        """Token index (row-major in the grid) under click ``click_index``."""
        c = self.clicks[click_index]
        return token_index(c.coords[0], c.coords[1], self.image_size, self.grid)

    def maps(self, block: int, click_index: int = -1, direction: str = "row") -> np.ndarray:
        """``heads x gh x gw`` attention maps of ``block`` for the token under a click."""
        return query_maps(self.cross_attention[block], self.query_token(click_index), self.grid, direction)

    def mean_map(self, block: int, click_index: int = -1, direction: str = "row") -> np.ndarray:
        """Head-averaged ``gh x gw`` map of ``block`` for the token under a click."""
        return self.maps(block, click_index, direction).mean(axis=0)

    def click_token_norm(self) -> np.ndarray:
        return click_token_norm(self.click_tokens, self.grid)

    def click_token_pca(self, k: int = 3) -> np.ndarray:
        return click_token_pca(self.click_tokens, self.grid, k)


def token_index(y: float, x: float, image_size: tuple[int, int], grid: tuple[int, int]) -> int:
    """Row-major index of the grid token that covers pixel ``(y, x)`` of an image of ``image_size``
    (the grid spans the whole image)."""
    h, w = image_size
    gh, gw = grid
    if not (0 <= y < h and 0 <= x < w):
        raise ValueError(f"query (y={y}, x={x}) lies outside the image of {h}x{w} (HxW)")
    r = min(gh - 1, int(np.floor(y * gh / h)))
    c = min(gw - 1, int(np.floor(x * gw / w)))
    return r * gw + c


def _as_numpy(a: Any) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().float().cpu().numpy()
    return np.asarray(a, dtype=np.float32)


def query_maps(attn: Any, query: int, grid: tuple[int, int], direction: str = "row") -> np.ndarray:
    """``heads x gh x gw`` maps for one query token of an attention tensor.

    ``attn``: ``heads x N_query x N_key`` (or ``1 x heads x ...``; a batch takes item 0), torch or
    numpy. ``direction="row"``: what token ``query`` attends to (each head sums to 1).
    ``direction="column"``: how much each query attends to token ``query``, divided by its sum.
    """
    a = _as_numpy(attn)
    if a.ndim == 4:
        a = a[0]
    if a.ndim != 3:
        raise ValueError(f"attention must be heads x N_query x N_key (or B x heads x ...), got shape {a.shape}")
    gh, gw = grid
    n = gh * gw
    if direction == "row":
        if a.shape[2] != n:
            raise ValueError(f"attention has {a.shape[2]} keys but the grid {gh}x{gw} has {n} tokens")
        if not 0 <= query < a.shape[1]:
            raise ValueError(f"query token {query} outside 0..{a.shape[1] - 1}")
        maps = a[:, query, :]
    elif direction == "column":
        if a.shape[1] != n:
            raise ValueError(f"attention has {a.shape[1]} queries but the grid {gh}x{gw} has {n} tokens")
        if not 0 <= query < a.shape[2]:
            raise ValueError(f"key token {query} outside 0..{a.shape[2] - 1}")
        maps = a[:, :, query]
        maps = maps / np.maximum(maps.sum(axis=1, keepdims=True), 1e-12)
    else:
        raise ValueError(f"direction must be 'row' or 'column', got {direction!r}")
    return maps.reshape(a.shape[0], gh, gw).astype(np.float32)


def normalize_map(m: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Divide each 2-D map (the last two axes) by its maximum: values in [0, 1], zeros stay zero."""
    m = np.asarray(m, dtype=np.float32)
    peak = m.max(axis=(-2, -1), keepdims=True)
    return m / np.maximum(peak, eps)


def upsample_map(m: np.ndarray, size: tuple[int, int], mode: str = "bilinear") -> np.ndarray:
    """Resize ``gh x gw`` (or ``k x gh x gw``) maps to ``size = (H, W)``: ``bilinear``
    (``align_corners=False``, smooth) or ``nearest`` (token blocks kept)."""
    import torch
    import torch.nn.functional as F

    m = np.asarray(m, dtype=np.float32)
    if m.ndim not in (2, 3):
        raise ValueError(f"upsample_map needs gh x gw or k x gh x gw maps, got shape {m.shape}")
    t = torch.from_numpy(np.ascontiguousarray(m))
    t = t[None, None] if m.ndim == 2 else t[None]
    if mode == "nearest":
        out = F.interpolate(t, size=tuple(size), mode="nearest")
    elif mode == "bilinear":
        out = F.interpolate(t, size=tuple(size), mode="bilinear", align_corners=False)
    else:
        raise ValueError(f"mode must be 'bilinear' or 'nearest', got {mode!r}")
    out = out[0, 0] if m.ndim == 2 else out[0]
    return out.numpy()


def _click_tokens_2d(click_tokens: Any, grid: tuple[int, int]) -> np.ndarray:
    """The click-branch tokens as an ``N x C`` array (a leading batch of one dropped), checked
    against the ``gh x gw`` grid."""
    t = _as_numpy(click_tokens)
    if t.ndim == 3:
        t = t[0]
    gh, gw = grid
    if t.ndim != 2 or t.shape[0] != gh * gw:
        raise ValueError(f"click_tokens must be N x C with N = {gh}x{gw}, got shape {t.shape}")
    return t


def click_token_norm(click_tokens: Any, grid: tuple[int, int]) -> np.ndarray:
    """L2 norm of each click-branch token, as a ``gh x gw`` map."""
    t = _click_tokens_2d(click_tokens, grid)
    gh, gw = grid
    return np.linalg.norm(t, axis=1).reshape(gh, gw).astype(np.float32)


def click_token_pca(click_tokens: Any, grid: tuple[int, int], k: int = 3) -> np.ndarray:
    """The first ``k`` principal components of the click-branch tokens as a ``gh x gw x k`` map,
    each scaled to [0, 1] (with ``k=3`` an RGB picture). Signs are fixed so that each component's
    largest loading is positive (deterministic)."""
    t = _click_tokens_2d(click_tokens, grid)
    gh, gw = grid
    x = t.astype(np.float64) - t.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    comps = vt[:k]
    signs = np.sign(comps[np.arange(len(comps)), np.abs(comps).argmax(axis=1)])
    comps = comps * np.where(signs == 0, 1, signs)[:, None]
    proj = x @ comps.T
    if proj.shape[1] < k:
        proj = np.concatenate([proj, np.zeros((proj.shape[0], k - proj.shape[1]))], axis=1)
    lo, hi = proj.min(axis=0), proj.max(axis=0)
    proj = (proj - lo) / np.where(hi > lo, hi - lo, 1.0)
    return proj.reshape(gh, gw, k).astype(np.float32)


def run_attention(
    model,
    image: np.ndarray,
    clicks: Sequence[Any],
    target_size: int | None = None,
    iterative: bool = True,
    label: str | None = None,
) -> AttentionResult:
    """Run ``model`` on the whole ``image`` for ``clicks`` and keep the cross-attention.

    ``clicks``: anything :func:`~icmformer.interactive.io.parse_clicks` accepts, in pixels of the
    image. The image is resized (bilinear, ``align_corners=True``, as the predictor's crops) to
    ``target_size`` (default ``model.default_input_size``). With ``iterative`` the clicks are fed
    one at a time, each prediction becoming the next previous mask; otherwise all clicks at once
    with an empty previous mask.
    """
    import torch
    import torch.nn.functional as F

    from icmformer.evaluation.predictor import map_clicks
    from icmformer.models.cross import variant_updates_clicks

    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be an H x W x 3 uint8 RGB array, got {getattr(image, 'shape', type(image))}")
    clicks = parse_clicks(clicks)
    if not clicks:
        raise ValueError("run_attention needs at least one click")
    h, w = image.shape[:2]
    check_clicks_inside(clicks, (h, w))
    t = int(target_size or model.default_input_size)
    device = next(model.parameters()).device
    roi = (0, h - 1, 0, w - 1)
    model.eval()
    with torch.inference_mode():
        img = torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1)[None].float() / 255.0
        img = F.interpolate(img, size=(t, t), mode="bilinear", align_corners=True)
        state = model.encode_image(img)
        prev = torch.zeros(1, 1, t, t, device=device)
        steps = range(1, len(clicks) + 1) if iterative else [len(clicks)]
        for k in steps:
            pts = torch.tensor(map_clicks(clicks[:k], roi, t)[None], dtype=torch.float32, device=device)
            last = k == len(clicks)
            out = model.predict_clicks(state, pts, prev, return_attention=last)
            logits, extras = out if last else (out, None)
            prev = torch.sigmoid(logits.float())
        prob = F.interpolate(prev, size=(h, w), mode="bilinear", align_corners=True)[0, 0].cpu().numpy()
    cfg = model.config
    attn = [_as_numpy(a)[0] for a in extras.get("cross_attention", [])]
    grid = tuple(int(g) for g in extras.get("grid") or state.grid)
    tokens = _as_numpy(extras["click_tokens"])[0]
    variant = cfg.cross_variant
    return AttentionResult(
        image=image,
        clicks=clicks,
        prob=prob.astype(np.float32),
        input_size=(t, t),
        grid=grid,
        cross_attention=attn,
        click_tokens=tokens,
        variant=variant if cfg.cross_modality else "none",
        query_stream=("clicks" if variant_updates_clicks(variant) else "image") if cfg.cross_modality else "none",
        model_name=getattr(model, "name", None),
        label=label,
    )
