"""The iCMFormer evaluation predictor (zoom-in + horizontal flip) and the interactive ``Predictor``.

This reproduces the official ``BasePredictor(with_flip=True, zoom_in=ZoomIn(skip_clicks=-1,
target_size=(T, T)))`` of OFFICIAL.md section 1e, step by step:

1. The previous **full-resolution probability map** (zeros before the first click) is the
   ``prev_mask`` input.
2. **Zoom-in.** First click: the ROI is the whole image. Later clicks: the candidate ROI is the
   bbox of ``prev_probs > 0.5`` with every positive click's pixel added (the whole image if that
   mask is empty), expanded to ``centre +- 0.5 * max(1.4 * size, 200)`` with Python ``round()``
   (half to even) and clamped to the image. The stored ROI is replaced by the candidate only if a
   positive click lies outside it (``rmin <= y < rmax`` and ``cmin <= x < cmax``, strict on the
   max side) or the "bbox IoU" (product of the row- and column-interval IoUs) is below 0.5. The
   crop ``[rmin:rmax+1, cmin:cmax+1]`` of the image and of the previous probability map is resized
   bilinearly (``align_corners=True``) to exactly ``T x T`` (aspect not kept); clicks are mapped
   to ``y' = T * (y - rmin) / (rmax - rmin + 1)`` (likewise ``x'``) as floats.
3. **Flip.** The batch is ``[crop, flip(crop)]``; flipped clicks get ``x'' = T - x' - 1``.
4. **Clicks** reach the model as ``(y, x, label)`` rows; a row whose two coordinates are both
   negative is padding (label -1), as the official ``DistMaps`` treats ``max(y, x) < 0`` as an
   invalid point. So a negative click above-left of the crop is dropped, while one that is outside
   in only one coordinate still paints the part of its disk that falls inside the crop (and the
   same click can be valid in the flipped item and dropped in the other). Clicks outside the crop
   are passed as they are, with the model's ``allow_outside_clicks=True`` path.
5. The two logit maps are averaged **in logit space** (the second un-flipped), passed through a
   sigmoid, resized bilinearly (``align_corners=True``) to the ROI size and pasted into a zero map
   of the full image; that map is returned and fed back at the next click.

Target size: ``model.default_input_size`` unless given (the official evaluation uses 448, and 672
for DAVIS; the CLI's ``--davis-target-size`` defaults to 1.5x the input size).

Deliberate differences from the official predictor:

- The click-independent image encoding (``model.encode_image``) is computed only when the crop
  changes and reused otherwise (the official code recomputes it at every click); the result is
  the same because the crop, and hence the encoding, is identical.
- ``zoom_in=False`` does not feed the full-resolution image as the official code without
  zoom-in would: it keeps the ROI fixed to the whole image, resized to ``T x T``, so the image is
  encoded once per image and the model always sees its training resolution.
- The official ``get_points_nd`` orders the rows positives-first and carries click indices; the
  disk encoding ignores both, so rows are passed in click order.
"""
from __future__ import annotations

import inspect
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from icmformer.evaluation.clicker import Click

PRED_THRESHOLD = 0.49

Roi = tuple[int, int, int, int]  # (rmin, rmax, cmin, cmax), inclusive


# ------------------------------------------------------------------------------ zoom-in geometry
def get_bbox_from_mask(mask: np.ndarray) -> Roi:
    """Inclusive ``(rmin, rmax, cmin, cmax)`` of the True pixels of a non-empty mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise ValueError("get_bbox_from_mask: the mask is empty")
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


def expand_bbox(bbox: Roi, expansion_ratio: float = 1.4, min_crop_size: float | None = 200) -> Roi:
    """Grow a bbox about its centre to ``max(expansion_ratio * size, min_crop_size)`` per side,
    rounding with Python's ``round`` (half to even), as the official ``expand_bbox``."""
    rmin, rmax, cmin, cmax = bbox
    rcenter = 0.5 * (rmin + rmax)
    ccenter = 0.5 * (cmin + cmax)
    height = expansion_ratio * (rmax - rmin + 1)
    width = expansion_ratio * (cmax - cmin + 1)
    if min_crop_size is not None:
        height = max(height, min_crop_size)
        width = max(width, min_crop_size)
    return (
        int(round(rcenter - 0.5 * height)),
        int(round(rcenter + 0.5 * height)),
        int(round(ccenter - 0.5 * width)),
        int(round(ccenter + 0.5 * width)),
    )


def clamp_bbox(bbox: Roi, rmin: int, rmax: int, cmin: int, cmax: int) -> Roi:
    return max(rmin, bbox[0]), min(rmax, bbox[1]), max(cmin, bbox[2]), min(cmax, bbox[3])


def _segment_iou(s1: tuple[int, int], s2: tuple[int, int]) -> float:
    a, b = s1
    c, d = s2
    inter = max(0, min(b, d) - max(a, c) + 1)
    union = max(1e-6, max(b, d) - min(a, c) + 1)
    return inter / union


def bbox_iou(b1: Roi, b2: Roi) -> float:
    """The official "bbox IoU": IoU of the row intervals times IoU of the column intervals."""
    return _segment_iou(b1[:2], b2[:2]) * _segment_iou(b1[2:], b2[2:])


def check_object_roi(roi: Roi, clicks: Sequence[Click]) -> bool:
    """True iff every positive click satisfies ``rmin <= y < rmax`` and ``cmin <= x < cmax``
    (strict on the max side, as the official code)."""
    for c in clicks:
        if c.is_positive:
            y, x = c.coords
            if y < roi[0] or y >= roi[1] or x < roi[2] or x >= roi[3]:
                return False
    return True


def get_object_roi(pred_mask: np.ndarray, clicks: Sequence[Click], expansion_ratio: float = 1.4, min_crop_size: float = 200) -> Roi:
    """Candidate ROI: bbox of ``pred_mask`` plus the positive clicks, expanded and clamped."""
    mask = pred_mask.copy()
    for c in clicks:
        if c.is_positive:
            mask[int(c.coords[0]), int(c.coords[1])] = True
    h, w = mask.shape
    return clamp_bbox(expand_bbox(get_bbox_from_mask(mask), expansion_ratio, min_crop_size), 0, h - 1, 0, w - 1)


def map_clicks(clicks: Sequence[Click], roi: Roi, target_size: int, flip: bool = False) -> np.ndarray:
    """``N x 3`` float64 rows ``(y', x', label)`` of clicks mapped into the ``T x T`` crop of ``roi``.

    ``y' = T * (y - rmin) / (rmax - rmin + 1)``; with ``flip`` ``x'' = T - x' - 1``. Labels are 1/0,
    and -1 for rows whose two coordinates are both negative (the official ``DistMaps`` drops them).
    With no clicks a single padding row is returned.
    """
    rmin, rmax, cmin, cmax = roi
    t = target_size
    rows = []
    for c in clicks:
        y = t * (c.coords[0] - rmin) / (rmax - rmin + 1)
        x = t * (c.coords[1] - cmin) / (cmax - cmin + 1)
        if flip:
            x = t - x - 1
        label = 1.0 if c.is_positive else 0.0
        if np.float32(y) < 0 and np.float32(x) < 0:
            y, x, label = -1.0, -1.0, -1.0
        rows.append((y, x, label))
    if not rows:
        rows.append((-1.0, -1.0, -1.0))
    return np.asarray(rows, dtype=np.float64)


# ------------------------------------------------------------------------------ core predictor
def prepare_model(model, device: str | torch.device | None = None) -> tuple[object, torch.device]:
    """Check that ``model`` has ``encode_image`` / ``predict_clicks``, move it to ``device`` (if
    given) and put it in eval mode; returns the model and its device."""
    for attr in ("encode_image", "predict_clicks"):
        if not callable(getattr(model, attr, None)):
            raise ValueError(f"model must implement {attr}(); got {type(model).__name__}")
    if device is not None:
        device = torch.device(device)
        if hasattr(model, "to"):
            model = model.to(device)
    else:
        device = _model_device(model)
    if hasattr(model, "eval"):
        model.eval()
    return model, device


@dataclass
class PredictorState:
    """What the predictor carries from one click to the next (for undo)."""

    prev_probs: torch.Tensor | None  # 1 x 1 x H x W on the device, or None before the first click
    roi: Roi | None


def _model_device(model) -> torch.device:
    dev = getattr(model, "device", None)
    if isinstance(dev, torch.device):
        return dev
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration, TypeError):
        return torch.device("cpu")


def _check_image(image: object) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise ValueError(
            f"image must be an H x W x 3 uint8 RGB numpy array, got shape {shape} dtype {dtype} "
            "(convert grayscale with np.repeat(img[..., None], 3, axis=2))"
        )
    return image


class ZoomFlipPredictor:
    """The official iCMFormer evaluation predictor (see the module docstring).

    Args:
        model: implements ``encode_image(img)`` and ``predict_clicks(state, clicks, prev_mask)``
            and has ``default_input_size``.
        device: where to run (default: the model's device; given, the model is moved there).
        zoom_in, flip: switch the two test-time transforms.
        target_size: side of the square network input (default ``model.default_input_size``).
        expansion_ratio, min_crop_size, recompute_thresh_iou, roi_prob_thresh: zoom-in parameters
            (official defaults 1.4, 200, 0.5, 0.5).
        cache_size: how many encoded crops to keep (reused when the ROI returns to one of them).
    """

    def __init__(
        self,
        model,
        device: str | torch.device | None = None,
        zoom_in: bool = True,
        flip: bool = True,
        target_size: int | None = None,
        expansion_ratio: float = 1.4,
        min_crop_size: float = 200,
        recompute_thresh_iou: float = 0.5,
        roi_prob_thresh: float = 0.5,
        cache_size: int = 4,
    ) -> None:
        model, device = prepare_model(model, device)
        self.model = model
        self.device = device
        self.zoom_in = bool(zoom_in)
        self.flip = bool(flip)
        if target_size is None:
            target_size = getattr(model, "default_input_size", None)
            if target_size is None:
                raise ValueError("target_size not given and the model has no default_input_size")
        self.target_size = int(target_size)
        if self.target_size < 1:
            raise ValueError(f"target_size must be a positive int, got {target_size}")
        self.expansion_ratio = expansion_ratio
        self.min_crop_size = min_crop_size
        self.recompute_thresh_iou = recompute_thresh_iou
        self.roi_prob_thresh = roi_prob_thresh
        self.cache_size = max(1, int(cache_size))
        self._outside_kw = self._find_outside_kw(model)
        self.encode_calls = 0
        self._image: torch.Tensor | None = None
        self._cache: OrderedDict[tuple, object] = OrderedDict()
        self.reset()

    @staticmethod
    def _find_outside_kw(model) -> str | None:
        try:
            params = inspect.signature(model.predict_clicks).parameters
        except (TypeError, ValueError):
            return None
        for name in ("allow_outside_clicks", "allow_outside"):
            if name in params:
                return name
        return None

    # -------------------------------------------------------------- state
    @property
    def image_size(self) -> tuple[int, int] | None:
        return None if self._image is None else (int(self._image.shape[2]), int(self._image.shape[3]))

    @property
    def roi(self) -> Roi | None:
        return self._roi

    def set_image(self, image: np.ndarray) -> None:
        """Use a new ``H x W x 3`` uint8 RGB image (clears the clicks state and the encoding cache)."""
        image = _check_image(image)
        self._image = torch.from_numpy(np.ascontiguousarray(image)).to(self.device).permute(2, 0, 1)[None].float() / 255.0
        self._cache.clear()
        self.reset()

    def reset(self) -> None:
        """Forget the previous prediction and ROI (a new object on the same image)."""
        self._prev: torch.Tensor | None = None
        self._roi: Roi | None = None

    def get_state(self) -> PredictorState:
        return PredictorState(self._prev, self._roi)

    def set_state(self, state: PredictorState) -> None:
        self._prev, self._roi = state.prev_probs, state.roi

    # -------------------------------------------------------------- steps
    def _whole(self) -> Roi:
        h, w = self.image_size
        return 0, h - 1, 0, w - 1

    def _update_roi(self, clicks: Sequence[Click]) -> Roi:
        if not self.zoom_in:
            self._roi = self._whole()
            return self._roi
        candidate = None
        if self._prev is not None:
            mask = (self._prev[0, 0] > self.roi_prob_thresh).cpu().numpy()
            if mask.any():
                candidate = get_object_roi(mask, clicks, self.expansion_ratio, self.min_crop_size)
        if candidate is None:
            candidate = self._whole()
        if (
            self._roi is None
            or not check_object_roi(self._roi, clicks)
            or bbox_iou(candidate, self._roi) < self.recompute_thresh_iou
        ):
            self._roi = candidate
        return self._roi

    def _crop(self, x: torch.Tensor, roi: Roi) -> torch.Tensor:
        rmin, rmax, cmin, cmax = roi
        t = self.target_size
        return F.interpolate(x[:, :, rmin : rmax + 1, cmin : cmax + 1], size=(t, t), mode="bilinear", align_corners=True)

    def _batch(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, torch.flip(x, dims=[3])], dim=0) if self.flip else x

    def _encoded(self, roi: Roi):
        key = (roi, self.target_size, self.flip)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        state = self.model.encode_image(self._batch(self._crop(self._image, roi)))
        self.encode_calls += 1
        self._cache[key] = state
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return state

    def click_tensor(self, clicks: Sequence[Click], roi: Roi) -> torch.Tensor:
        """The ``B x N x 3`` click tensor the model receives for ``clicks`` in ``roi``."""
        rows = [map_clicks(clicks, roi, self.target_size)]
        if self.flip:
            rows.append(map_clicks(clicks, roi, self.target_size, flip=True))
        return torch.tensor(np.stack(rows), dtype=torch.float32, device=self.device)

    def predict(self, clicks: Sequence[Click]) -> np.ndarray:
        """Probability map (``H x W`` float32) for ``clicks`` (all clicks so far, newest last),
        continuing from the current state (previous map and ROI), which it then updates."""
        if self._image is None:
            raise RuntimeError("call set_image(image) before predicting")
        clicks = list(clicks)
        if not clicks:
            raise ValueError("predict needs at least one click")
        h, w = self.image_size
        for c in clicks:
            if not (0 <= c.coords[0] < h and 0 <= c.coords[1] < w):
                raise ValueError(f"click (y={c.coords[0]}, x={c.coords[1]}) lies outside the {h}x{w} (HxW) image")
        with torch.inference_mode():
            roi = self._update_roi(clicks)
            prev_full = self._prev if self._prev is not None else torch.zeros(1, 1, h, w, device=self.device)
            state = self._encoded(roi)
            prev = self._batch(self._crop(prev_full, roi))
            points = self.click_tensor(clicks, roi)
            kwargs = {self._outside_kw: True} if self._outside_kw else {}
            # Negative clicks may lie outside the crop (y' or x' outside [0, T)): they are passed
            # as they are, which needs the model's allow-outside path; the official DistMaps paints
            # the part of their disk that falls inside, and drops rows with both coordinates < 0.
            logits = self.model.predict_clicks(state, points, prev, **kwargs)
            if isinstance(logits, tuple):
                logits = logits[0]
            t = self.target_size
            if tuple(logits.shape[-2:]) != (t, t):
                logits = F.interpolate(logits, size=(t, t), mode="bilinear", align_corners=True)
            if self.flip:
                logits = 0.5 * (logits[:1] + torch.flip(logits[1:2], dims=[3]))
            probs = torch.sigmoid(logits.float())
            rmin, rmax, cmin, cmax = roi
            probs = F.interpolate(probs, size=(rmax - rmin + 1, cmax - cmin + 1), mode="bilinear", align_corners=True)
            full = torch.zeros(1, 1, h, w, device=self.device, dtype=torch.float32)
            full[:, :, rmin : rmax + 1, cmin : cmax + 1] = probs
            self._prev = full
            return full[0, 0].cpu().numpy().astype(np.float32, copy=False)


# ------------------------------------------------------------------------------ evaluation adapter
class ModelPredictFn:
    """``predict_fn(clicks) -> probs`` for :func:`~icmformer.evaluation.loop.evaluate_sample`.

    One object serves every instance of one image: a click list of length 1 (or one that does not
    extend the previous list by one click) starts a new sequence; a list that is not a one-click
    extension is replayed from its first click, so the result equals an uninterrupted sequence.
    The image encoding cache survives across instances (every first click uses the whole image).
    """

    def __init__(self, core: ZoomFlipPredictor) -> None:
        self.core = core
        self._seen: list[Click] = []

    def __call__(self, clicks: Sequence[Click]) -> np.ndarray:
        clicks = list(clicks)
        if not clicks:
            raise ValueError("predict_fn needs at least one click")
        if len(clicks) == 1 or self._seen != clicks[:-1]:
            self.core.reset()
            for k in range(1, len(clicks)):
                self.core.predict(clicks[:k])
        probs = self.core.predict(clicks)
        self._seen = clicks
        return probs


def make_predict_fn(model, image: np.ndarray, **options) -> ModelPredictFn:
    """A ``predict_fn`` for one image; ``options`` go to :class:`ZoomFlipPredictor` (``device``,
    ``zoom_in``, ``flip``, ``target_size``, ...)."""
    core = ZoomFlipPredictor(model, **options)
    core.set_image(image)
    return ModelPredictFn(core)


# ------------------------------------------------------------------------------ interactive
class Predictor:
    """Interactive segmentation with an iCMFormer model, in the style of segment-anything::

        predictor = Predictor(model)
        predictor.set_image(image_uint8)            # H x W x 3 RGB
        mask, prob = predictor.add_click(120, 200, positive=True)
        mask, prob = predictor.add_click(40, 10, positive=False)
        mask, prob = predictor.undo()

    Each click runs the evaluation predictor (zoom-in + flip by default) with all clicks so far and
    the previous probability map; ``mask`` is ``prob > 0.49``.
    """

    def __init__(self, model, device: str | torch.device | None = None, zoom_in: bool = True, flip: bool = True, target_size: int | None = None) -> None:
        self._core = ZoomFlipPredictor(model, device=device, zoom_in=zoom_in, flip=flip, target_size=target_size)
        self.model = self._core.model
        self.pred_thr = PRED_THRESHOLD
        self.last_latency_s: float | None = None
        self._clicks: list[Click] = []
        self._history: list[tuple[PredictorState, np.ndarray | None]] = []
        self._prob: np.ndarray | None = None

    @property
    def device(self) -> torch.device:
        return self._core.device

    @property
    def clicks(self) -> list[Click]:
        """The clicks so far (a copy)."""
        return list(self._clicks)

    @property
    def image_size(self) -> tuple[int, int] | None:
        return self._core.image_size

    @property
    def prob(self) -> np.ndarray | None:
        """The current probability map (``None`` before the first click)."""
        return self._prob

    @property
    def encode_count(self) -> int:
        """How often the image branch was encoded since the model was set (once per image and
        zoom-in crop; reused across clicks)."""
        return int(self._core.encode_calls)

    @property
    def settings(self) -> dict:
        """The predictor's test-time transforms: zoom-in, flip and the network input side."""
        return {"zoom_in": self._core.zoom_in, "flip": self._core.flip, "target_size": self._core.target_size}

    def set_image(self, image: np.ndarray) -> None:
        """Start on a new ``H x W x 3`` uint8 RGB image (clears the clicks)."""
        self._core.set_image(image)
        self._clicks, self._history, self._prob = [], [], None
        self.last_latency_s = None

    def _result(self) -> tuple[np.ndarray, np.ndarray]:
        h, w = self.image_size
        prob = self._prob if self._prob is not None else np.zeros((h, w), np.float32)
        return prob > self.pred_thr, prob

    def add_click(self, y: int, x: int, positive: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Add a click at row ``y``, column ``x``; returns ``(mask bool H x W, prob float32 H x W)``."""
        if self.image_size is None:
            raise RuntimeError("call set_image(image) before add_click")
        h, w = self.image_size
        try:
            yi, xi = int(y), int(x)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"click coordinates must be numbers, got y={y!r}, x={x!r}") from exc
        if not (0 <= y < h and 0 <= x < w):
            raise ValueError(
                f"click (y={y}, x={x}) lies outside the image of {h}x{w} (HxW); "
                f"need 0 <= y <= {h - 1} and 0 <= x <= {w - 1}"
            )
        click = Click(bool(positive), (yi, xi), len(self._clicks))
        self._history.append((self._core.get_state(), self._prob))
        t0 = time.perf_counter()
        try:
            prob = self._core.predict(self._clicks + [click])
        except Exception:
            state, _ = self._history.pop()
            self._core.set_state(state)
            raise
        self.last_latency_s = time.perf_counter() - t0
        self._clicks.append(click)
        self._prob = prob
        return self._result()

    def undo(self) -> tuple[np.ndarray, np.ndarray]:
        """Remove the last click and return the previous ``(mask, prob)`` (empty with no clicks)."""
        if self.image_size is None:
            raise RuntimeError("call set_image(image) before undo")
        if self._clicks:
            state, prob = self._history.pop()
            self._core.set_state(state)
            self._clicks.pop()
            self._prob = prob
        return self._result()

    def reset(self) -> None:
        """Remove all clicks (the image and its cached encoding stay)."""
        self._core.reset()
        self._clicks, self._history, self._prob = [], [], None
