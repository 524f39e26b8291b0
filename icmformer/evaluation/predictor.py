"""The iCMFormer evaluation predictor (zoom-in + horizontal flip) and the interactive ``Predictor``.

Both are thin stateful wrappers of the batchable protocol core :mod:`icmformer.evaluation.core`
(which the batched evaluator drives too); the zoom-in geometry is :mod:`icmformer.evaluation.roi`.

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
for DAVIS; :meth:`icmformer.evaluation.protocol.EvalProtocol.input_size` gives DAVIS 1.5x the input size).

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

import time
from collections.abc import Sequence

import numpy as np
import torch

from icmformer.evaluation.clicker import Click
from icmformer.evaluation.click_input import validate_click
from icmformer.evaluation.core import (  # noqa: F401  (re-exported: the old home of these names)
    ClickState,
    EncodeCache,
    ImageEntry,
    ModelBackend,
    TorchBackend,
    ZoomFlipCore,
    check_image,
    model_device,
    prepare_model,
)
from icmformer.evaluation.protocol import PRED_THRESHOLD
from icmformer.evaluation.roi import (  # noqa: F401  (re-exported: the old home of these names)
    Roi,
    bbox_iou,
    check_object_roi,
    clamp_bbox,
    expand_bbox,
    get_bbox_from_mask,
    get_object_roi,
    map_clicks,
)

PredictorState = ClickState  # the name this state had before the core existed
_check_image = check_image
_model_device = model_device


class ZoomFlipPredictor:
    """The official iCMFormer evaluation predictor (see the module docstring) for one image at a
    time: a :class:`~icmformer.evaluation.core.ZoomFlipCore` with one image and one object state.

    Args:
        model: a model with ``encode_image`` / ``predict_clicks`` and ``default_input_size``, or
            a :class:`~icmformer.evaluation.core.ModelBackend`.
        device: where to run (default: the model's device; given, the model is moved there).
        zoom_in, flip: switch the two test-time transforms.
        target_size: side of the square network input (default ``model.default_input_size``).
        expansion_ratio, min_crop_size, recompute_thresh_iou, roi_prob_thresh: zoom-in parameters
            (official defaults 1.4, 200, 0.5, 0.5).
        cache_size: how many encoded crops to keep (reused when the ROI returns to one of them).
    """

    def __init__(self, model, device: str | torch.device | None = None, **options) -> None:
        self.core = ZoomFlipCore(model, device, **options)
        self.model = getattr(self.core.backend, "model", self.core.backend)
        self._entry: ImageEntry | None = None
        self._state = ClickState()
        self._past_encodes = 0  # encodes of the images before the current one

    device = property(lambda self: self.core.device)
    zoom_in = property(lambda self: self.core.zoom_in)
    flip = property(lambda self: self.core.flip)
    target_size = property(lambda self: self.core.target_size)

    @property
    def image_size(self) -> tuple[int, int] | None:
        return None if self._entry is None else self._entry.size

    @property
    def roi(self) -> Roi | None:
        return self._state.roi

    @property
    def encode_calls(self) -> int:
        """Image-branch passes since this predictor was made (one per image and distinct crop)."""
        return self._past_encodes + (0 if self._entry is None else self._entry.cache.calls)

    def set_image(self, image: np.ndarray) -> None:
        """Use a new ``H x W x 3`` uint8 RGB image (clears the clicks state and the encoding cache)."""
        entry = self.core.add_image(image)
        self._past_encodes = self.encode_calls
        self._entry = entry
        self.reset()

    def reset(self) -> None:
        """Forget the previous prediction and ROI (a new object on the same image)."""
        self._state = ClickState()

    def get_state(self) -> ClickState:
        return self._state

    def set_state(self, state: ClickState) -> None:
        self._state = state

    def click_tensor(self, clicks: Sequence[Click], roi: Roi) -> torch.Tensor:
        """The ``B x N x 3`` click tensor the model receives for ``clicks`` in ``roi``."""
        return self.core.click_tensor(clicks, roi)

    def predict(self, clicks: Sequence[Click]) -> np.ndarray:
        """Probability map (``H x W`` float32) for ``clicks`` (all clicks so far, newest last),
        continuing from the current state (previous map and ROI), which it then updates."""
        if self._entry is None:
            raise RuntimeError("call set_image(image) before predicting")
        clicks = list(clicks)
        if not clicks:
            raise ValueError("predict needs at least one click")
        h, w = self._entry.size
        for c in clicks:
            if not (0 <= c.coords[0] < h and 0 <= c.coords[1] < w):
                raise ValueError(f"click (y={c.coords[0]}, x={c.coords[1]}) lies outside the {h}x{w} (HxW) image")
        step = self.core.prepare(self._entry, clicks, self._state)
        ((probs, self._state),) = self.core.run([step])
        return probs


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
        # labels: bool / 0 / 1 only; finite numeric coordinates, fractions to the nearest pixel
        yi, xi, label = validate_click(y, x, positive, self.image_size)
        click = Click(label, (yi, xi), len(self._clicks))
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
