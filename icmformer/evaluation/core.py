"""The zoom-in + flip protocol core: one batchable implementation behind every predictor.

The sequential evaluation predictor, the batched evaluator and the interactive ``Predictor`` all
run a click through these three steps (the numerics of OFFICIAL.md section 1e live only here and
in :mod:`icmformer.evaluation.roi`):

1. :meth:`ZoomFlipCore.prepare` (no model call): update the ROI from the previous probability map,
   crop and resize the previous map to ``T x T`` (with its flipped copy), map the clicks into the
   crop; look up the crop's encoding in the image's :class:`EncodeCache`.
2. :meth:`ZoomFlipCore.forward`: encode the crops no cache holds (one ``encode`` call for all
   steps; a crop shared by steps of one image is encoded once), then one ``decode`` call for all
   steps (states concatenated, click tensors padded with ``(-1, -1, -1)`` rows, previous-mask crops
   stacked). Returns each step's logits (``n x 1 x T x T``, ``n = 2`` with flip).
3. :meth:`ZoomFlipCore.finish`: flip average in logit space, sigmoid, bilinear resize to the ROI,
   paste into a zero map of the full image; returns the map and the next :class:`ClickState`.

The model enters only through a backend with two calls, so other runtimes (e.g. ONNX) plug in:
``encode(crops B x 3 x T x T in [0, 1]) -> state`` and ``decode(state, clicks B x N x 3,
prev B x 1 x T x T) -> logits B x 1 x h x w``. States are opaque; :class:`ModelBackend` batches
them with ``ImageState.cat`` / ``state.select`` (override ``cat_states`` / ``select_state`` for
another state type). :class:`TorchBackend` wraps a model with ``encode_image`` / ``predict_clicks``.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from icmformer.evaluation.clicker import Click
from icmformer.evaluation.roi import Roi, map_clicks, update_roi, whole_image


# ------------------------------------------------------------------------------ backends
class ModelBackend:
    """The two model calls the core needs; subclasses implement :meth:`encode` and :meth:`decode`.

    Attributes:
        device: where the core puts image, mask and click tensors.
        default_input_size: the model's input side (the default ``target_size``).
    """

    device: torch.device = torch.device("cpu")
    default_input_size: int | None = None

    def encode(self, images: torch.Tensor):
        """``B x 3 x T x T`` float crops in [0, 1] -> an opaque state of batch ``B``."""
        raise NotImplementedError

    def decode(self, state, clicks: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        """State, ``B x N x 3`` clicks ``(y, x, label)`` (label -1: padding; clicks may lie outside
        the crop) and ``B x 1 x T x T`` previous masks -> ``B x 1 x h x w`` logits."""
        raise NotImplementedError

    def cat_states(self, states: Sequence):
        """One state holding ``states`` along the batch dimension (a single state as it is)."""
        if len(states) == 1:
            return states[0]
        return type(states[0]).cat(states)

    def select_state(self, state, items: slice):
        """The batch items ``items`` of ``state``."""
        return state.select(items)


def model_device(model) -> torch.device:
    """The device of a model (its ``device`` attribute, else its first parameter's, else CPU)."""
    dev = getattr(model, "device", None)
    if isinstance(dev, torch.device):
        return dev
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration, TypeError):
        return torch.device("cpu")


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
        device = model_device(model)
    if hasattr(model, "eval"):
        model.eval()
    return model, device


class TorchBackend(ModelBackend):
    """A model with ``encode_image(images)`` and ``predict_clicks(state, clicks, prev,
    allow_outside_clicks=True)`` (our :class:`~icmformer.models.icmformer.ICMFormer` and its
    wrappers); moved to ``device`` if given and put in eval mode."""

    def __init__(self, model, device: str | torch.device | None = None) -> None:
        self.model, self.device = prepare_model(model, device)
        self.default_input_size = getattr(self.model, "default_input_size", None)

    def encode(self, images: torch.Tensor):
        return self.model.encode_image(images)

    def decode(self, state, clicks: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        # Negative clicks may lie outside the crop (y' or x' outside [0, T)): they are passed as
        # they are, which needs the model's allow-outside path; the official DistMaps paints the
        # part of their disk that falls inside, and drops rows with both coordinates < 0.
        return self.model.predict_clicks(state, clicks, prev, allow_outside_clicks=True)


def as_backend(model, device: str | torch.device | None = None) -> ModelBackend:
    """``model`` itself if it is a :class:`ModelBackend`, else a :class:`TorchBackend` around it."""
    if isinstance(model, ModelBackend):
        if device is not None and torch.device(device) != model.device:
            raise ValueError(f"backend {type(model).__name__} runs on {model.device}; device={device} cannot move it")
        return model
    return TorchBackend(model, device)


# ------------------------------------------------------------------------------ state
@dataclass
class ClickState:
    """What one object carries from one click to the next (for undo): the previous
    full-resolution probability map (``1 x 1 x H x W`` on the device, ``None`` before the first
    click) and the ROI of the previous click."""

    prev_probs: torch.Tensor | None = None
    roi: Roi | None = None


class EncodeCache:
    """Least-recently-used store of crop encodings of one image, keyed ``(roi, target_size, flip)``.

    ``calls`` counts the encodings put in (the number of image-branch passes for this image).
    """

    def __init__(self, size: int = 4) -> None:
        self.size = max(1, int(size))
        self.calls = 0
        self._items: OrderedDict[tuple, object] = OrderedDict()

    def get(self, key: tuple):
        """The cached state (marked most recently used), or ``None``."""
        if key not in self._items:
            return None
        self._items.move_to_end(key)
        return self._items[key]

    def put(self, key: tuple, state) -> None:
        self.calls += 1
        self._items[key] = state
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


class ImageEntry:
    """One image on the core's device (``1 x 3 x H x W`` float in [0, 1]) and its encode cache;
    shared by every object (instance) on that image."""

    def __init__(self, image: np.ndarray, device: torch.device, cache_size: int = 4) -> None:
        image = check_image(image)
        self.tensor = torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1)[None].float() / 255.0
        self.size = (int(image.shape[0]), int(image.shape[1]))
        self.cache = EncodeCache(cache_size)


@dataclass
class Step:
    """One click of one object, prepared by :meth:`ZoomFlipCore.prepare`."""

    entry: ImageEntry
    roi: Roi
    key: tuple  # the encode-cache key
    prev_crop: torch.Tensor  # n x 1 x T x T
    points: torch.Tensor  # n x N x 3
    encoded: object = None  # the crop's state, once known


def check_image(image: object) -> np.ndarray:
    """``image`` if it is an ``H x W x 3`` uint8 array, else a ``ValueError`` saying what it is."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise ValueError(
            f"image must be an H x W x 3 uint8 RGB numpy array, got shape {shape} dtype {dtype} "
            "(convert grayscale with np.repeat(img[..., None], 3, axis=2))"
        )
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image is empty: {image.shape[0]}x{image.shape[1]} pixels (HxW); need at least 1x1")
    return image


def pad_clicks(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Stack ``b_i x n_i x 3`` click tensors into ``sum(b_i) x max(n_i) x 3``, padding with -1 rows."""
    n = max(t.shape[1] for t in tensors)
    if all(t.shape[1] == n for t in tensors):
        return torch.cat(list(tensors), dim=0)
    out = torch.full((sum(t.shape[0] for t in tensors), n, 3), -1.0, dtype=tensors[0].dtype, device=tensors[0].device)
    row = 0
    for t in tensors:
        out[row : row + t.shape[0], : t.shape[1]] = t
        row += t.shape[0]
    return out


# ------------------------------------------------------------------------------ the core
class ZoomFlipCore:
    """The official zoom-in + flip predictor as batchable steps (see the module docstring).

    Args:
        model: a :class:`ModelBackend`, or a model with ``encode_image`` / ``predict_clicks``
            (wrapped in a :class:`TorchBackend`, moved to ``device`` if given).
        zoom_in, flip: the two test-time transforms (without zoom-in the ROI stays the whole image,
            resized to ``T x T``).
        target_size: ``T``, the network input side (default: the model's ``default_input_size``).
        expansion_ratio, min_crop_size, recompute_thresh_iou, roi_prob_thresh: zoom-in parameters
            (official defaults 1.4, 200, 0.5, 0.5).
        cache_size: encoded crops kept per image.
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
        self.backend = as_backend(model, device)
        self.device = self.backend.device
        self.zoom_in = bool(zoom_in)
        self.flip = bool(flip)
        if target_size is None:
            target_size = self.backend.default_input_size
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

    @property
    def items_per_step(self) -> int:
        """Network inputs per click: 2 with flip (the crop and its mirror), else 1."""
        return 2 if self.flip else 1

    def add_image(self, image: np.ndarray) -> ImageEntry:
        """An :class:`ImageEntry` for an ``H x W x 3`` uint8 RGB image (with an empty encode cache)."""
        return ImageEntry(image, self.device, self.cache_size)

    # -------------------------------------------------------------- 1. prepare
    def roi_for(self, entry: ImageEntry, clicks: Sequence[Click], state: ClickState) -> Roi:
        """The ROI of the next click (the whole image without zoom-in)."""
        if not self.zoom_in:
            return whole_image(*entry.size)
        mask = None if state.prev_probs is None else (state.prev_probs[0, 0] > self.roi_prob_thresh).cpu().numpy()
        return update_roi(mask, clicks, state.roi, entry.size, self.expansion_ratio, self.min_crop_size, self.recompute_thresh_iou)

    def crop(self, x: torch.Tensor, roi: Roi) -> torch.Tensor:
        """``x[..., rmin:rmax+1, cmin:cmax+1]`` resized bilinearly (``align_corners=True``) to ``T x T``,
        with its horizontal mirror appended along the batch when flipping."""
        rmin, rmax, cmin, cmax = roi
        t = self.target_size
        out = F.interpolate(x[:, :, rmin : rmax + 1, cmin : cmax + 1], size=(t, t), mode="bilinear", align_corners=True)
        return torch.cat([out, torch.flip(out, dims=[3])], dim=0) if self.flip else out

    def click_tensor(self, clicks: Sequence[Click], roi: Roi) -> torch.Tensor:
        """The ``n x N x 3`` click tensor the model receives for ``clicks`` in ``roi``."""
        rows = [map_clicks(clicks, roi, self.target_size)]
        if self.flip:
            rows.append(map_clicks(clicks, roi, self.target_size, flip=True))
        return torch.tensor(np.stack(rows), dtype=torch.float32, device=self.device)

    def prepare(self, entry: ImageEntry, clicks: Sequence[Click], state: ClickState) -> Step:
        """Step 1 for one object: ROI, previous-mask crop, click tensor, cached encoding (if any)."""
        with torch.inference_mode():
            roi = self.roi_for(entry, clicks, state)
            h, w = entry.size
            prev_full = state.prev_probs if state.prev_probs is not None else torch.zeros(1, 1, h, w, device=self.device)
            step = Step(entry, roi, (roi, self.target_size, self.flip), self.crop(prev_full, roi), self.click_tensor(clicks, roi))
        step.encoded = entry.cache.get(step.key)
        return step

    # -------------------------------------------------------------- 2. forward
    def encode_missing(self, steps: Sequence[Step]) -> int:
        """Encode, in one backend call, the crops of ``steps`` that no cache holds (each distinct
        image crop once) and store them in their image's cache; returns the number of crops."""
        todo: OrderedDict[tuple, list[Step]] = OrderedDict()
        for s in steps:
            if s.encoded is None:
                todo.setdefault((id(s.entry), s.key), []).append(s)
        if not todo:
            return 0
        n = self.items_per_step
        with torch.inference_mode():
            crops = [self.crop(users[0].entry.tensor, users[0].roi) for users in todo.values()]
            encoded = self.backend.encode(crops[0] if len(crops) == 1 else torch.cat(crops, dim=0))
        for j, users in enumerate(todo.values()):
            st = encoded if len(todo) == 1 else self.backend.select_state(encoded, slice(j * n, (j + 1) * n))
            users[0].entry.cache.put(users[0].key, st)
            for s in users:
                s.encoded = st
        return len(todo)

    def forward(self, steps: Sequence[Step]) -> list[torch.Tensor]:
        """Step 2: encode what is missing, then one ``decode`` call for all ``steps``; returns each
        step's logits (``n x 1 x T x T``)."""
        steps = list(steps)
        self.encode_missing(steps)
        n, t = self.items_per_step, self.target_size
        with torch.inference_mode():
            state = self.backend.cat_states([s.encoded for s in steps])
            points = pad_clicks([s.points for s in steps])
            prev = steps[0].prev_crop if len(steps) == 1 else torch.cat([s.prev_crop for s in steps], dim=0)
            logits = self.backend.decode(state, points, prev)
            if tuple(logits.shape[-2:]) != (t, t):
                logits = F.interpolate(logits, size=(t, t), mode="bilinear", align_corners=True)
        return [logits[i * n : (i + 1) * n] for i in range(len(steps))]

    # -------------------------------------------------------------- 3. finish
    def finish(self, step: Step, logits: torch.Tensor) -> tuple[torch.Tensor, ClickState]:
        """Step 3: the full-resolution probability map (``1 x 1 x H x W`` float32 on the device)
        from one step's logits, and the state for the object's next click."""
        with torch.inference_mode():
            if self.flip:
                logits = 0.5 * (logits[:1] + torch.flip(logits[1:2], dims=[3]))
            probs = torch.sigmoid(logits.float())
            rmin, rmax, cmin, cmax = step.roi
            probs = F.interpolate(probs, size=(rmax - rmin + 1, cmax - cmin + 1), mode="bilinear", align_corners=True)
            h, w = step.entry.size
            full = torch.zeros(1, 1, h, w, device=self.device, dtype=torch.float32)
            full[:, :, rmin : rmax + 1, cmin : cmax + 1] = probs
        return full, ClickState(full, step.roi)

    def run(self, steps: Sequence[Step]) -> list[tuple[np.ndarray, ClickState]]:
        """Steps 2 and 3 for prepared ``steps``: ``(H x W float32 probabilities, next state)`` each."""
        out = []
        for step, logits in zip(steps, self.forward(steps)):
            full, state = self.finish(step, logits)
            out.append((full[0, 0].cpu().numpy().astype(np.float32, copy=False), state))
        return out
