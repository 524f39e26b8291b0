"""Batched evaluation: several instances advance click by click together.

:func:`evaluate_batch` runs the same protocol as :func:`~icmformer.evaluation.loop.evaluate_sample`
with the :class:`~icmformer.evaluation.predictor.ZoomFlipPredictor` method, but up to
``batch_size`` instances (K) at a time, so that one forward pass serves K instances (2K network
inputs with flip). Each instance keeps its own state, exactly as the sequential path:

- its :class:`~icmformer.evaluation.clicker.Clicker` and current prediction mask;
- its previous full-resolution probability map and its zoom-in ROI, updated by the predictor's
  own code (``ZoomFlipPredictor._update_roi``; the geometry helpers ``get_object_roi``,
  ``check_object_roi``, ``bbox_iou`` and ``map_clicks`` of :mod:`~icmformer.evaluation.predictor`);
- the encode cache of its image (``(roi, target_size, flip)`` keys, LRU of ``cache_size`` crops),
  shared by the instances of one image as the per-image predictor of the sequential runner shares
  it. Instances share an image when their items hold the *same* image array object (as the masks
  of one :class:`~icmformer.data.sample.Sample` do).

At each click step every active instance makes its next click; the crops that are not cached are
encoded in one ``model.encode_image`` call (a crop needed by several instances of one image is
encoded once); all active instances are predicted in one ``model.predict_clicks`` call (the
:class:`~icmformer.models.icmformer.ImageState` s concatenated with :meth:`ImageState.cat`, the
click tensors padded with ``(-1, -1, -1)`` rows to the longest click list, the previous-mask crops
stacked); the logits are split per instance and post-processed as the sequential predictor does
(flip averaging in logit space, sigmoid, bilinear resize to the ROI, paste into the full map).
Finished instances are replaced by the next waiting ones (a work queue), so the batch stays full;
``items`` may be a lazy iterator (the runner loads images only when the queue reaches them).

The results equal the sequential ones up to floating-point differences of batched kernels (on
CPU they are identical in the tests).

Timing (per instance and click, as :class:`~icmformer.evaluation.loop.SampleResult`):

- ``method_times``: the instance's share of the batched step, i.e. the time of the whole method
  part of the step (ROI updates, crops, the encode and predict calls, post-processing) divided by
  the number of instances in that step. Summed over instances it is the method's total time.
- ``simulator_times``: the instance's own click simulation and IoU time.
- ``wall_s`` (:class:`BatchSampleResult`): the instance's share of the wall-clock timeline. Each
  step's interval (from the end of the previous step, so it includes loading images pulled from
  a lazy ``items`` and whatever the consumer did with the results in between) is divided equally
  among the instances of the step; the sum over instances is the wall time of the whole run, so
  the official SPC (wall time / clicks) of a batched run is its real throughput per click.
"""
from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from icmformer.evaluation.clicker import Clicker
from icmformer.evaluation.loop import SampleResult
from icmformer.evaluation.metrics import iou_float64
from icmformer.evaluation.predictor import (
    PRED_THRESHOLD,
    PredictorState,
    ZoomFlipPredictor,
    _check_image,
    _model_device,
    make_predict_fn,
    prepare_model,
)
from icmformer.models.icmformer import ImageState


@dataclass
class BatchSampleResult(SampleResult):
    """A :class:`~icmformer.evaluation.loop.SampleResult` with the batched run's extras.

    Attributes:
        instance_id: the third element of the instance's item, returned as given.
        index: the position of the item in ``items``.
        wall_s: the instance's share of the wall-clock time (see the module docstring).
        batch_sizes: how many instances shared each of its click steps.
    """

    instance_id: object = None
    index: int = -1
    wall_s: float = 0.0
    batch_sizes: list[int] = field(default_factory=list)


class _ImageSlot:
    """One image in flight: a :class:`ZoomFlipPredictor` holding the image tensor and its encode
    cache, shared by the instances of that image."""

    def __init__(self, model, image: np.ndarray, options: dict) -> None:
        self.image = image  # keeps the array alive, so its id() stays unique while in use
        self.core = ZoomFlipPredictor(model, **options)
        self.core.set_image(image)
        self.users = 0


class _Instance:
    def __init__(self, index: int, instance_id, slot: _ImageSlot, gt_mask: np.ndarray, ignore_label: int) -> None:
        self.index = index
        self.slot = slot
        self.gt = gt_mask
        self.clicker = Clicker(gt_mask, ignore_label=ignore_label)
        self.pred_mask = np.zeros(gt_mask.shape, dtype=bool)
        self.state = PredictorState(None, None)
        self.result = BatchSampleResult(instance_id=instance_id, index=index)
        self.clicks: list = []
        self.done = False


def _check_item(item, index: int):
    try:
        image, gt_mask, instance_id = item
    except (TypeError, ValueError):
        raise ValueError(f"items[{index}] must be a tuple (image H x W x 3 uint8, gt_mask H x W, instance_id)") from None
    image = _check_image(image)
    gt_mask = np.asarray(gt_mask)
    if gt_mask.ndim != 2 or gt_mask.shape != image.shape[:2]:
        raise ValueError(
            f"items[{index}] ({instance_id!r}): gt_mask has shape {gt_mask.shape}, expected {image.shape[:2]} "
            "(H x W of its image)"
        )
    return image, gt_mask, instance_id


def _pad_clicks(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
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


def iter_evaluate_batch(
    model,
    items: Iterable,
    max_clicks: int = 20,
    batch_size: int = 8,
    zoom_in: bool = True,
    flip: bool = True,
    target_size: int | None = None,
    pred_thr: float = PRED_THRESHOLD,
    device: str | torch.device | None = None,
    *,
    target_iou: float = 0.90,
    stop_at_target: bool = False,
    min_clicks: int = 1,
    ignore_label: int = -1,
    cache_size: int = 4,
    **predictor_options,
) -> Iterator[BatchSampleResult]:
    """Like :func:`evaluate_batch`, but a generator that yields each instance's result as soon as
    it is finished (instances finishing in the same step in input order). ``items`` is consumed
    lazily, only when a batch slot becomes free."""
    if int(max_clicks) < 1:
        raise ValueError(f"max_clicks must be >= 1, got {max_clicks}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    model, _ = prepare_model(model, device)
    options = dict(
        device=None, zoom_in=zoom_in, flip=flip, target_size=target_size, cache_size=cache_size, **predictor_options
    )
    k_max = int(batch_size)
    stop_thr = max(0.8, float(target_iou))
    n_per = 2 if flip else 1

    queue = iter(items)
    exhausted = False
    next_index = 0
    slots: dict[int, _ImageSlot] = {}
    active: list[_Instance] = []
    outside_kw: str | None = None

    def refill() -> None:
        nonlocal exhausted, next_index
        while len(active) < k_max and not exhausted:
            try:
                item = next(queue)
            except StopIteration:
                exhausted = True
                break
            image, gt_mask, instance_id = _check_item(item, next_index)
            slot = slots.get(id(image))
            if slot is None:
                slot = _ImageSlot(model, image, options)
                slots[id(image)] = slot
            slot.users += 1
            active.append(_Instance(next_index, instance_id, slot, gt_mask, ignore_label))
            next_index += 1
        # Images whose instances are all done are dropped only now, so that the next instance of
        # the same image (items of one sample come one after another) still finds its cache.
        for key in [k for k, s in slots.items() if s.users == 0]:
            del slots[key]

    t_mark = time.perf_counter()
    while True:
        refill()
        if not active:
            break
        n = len(active)
        # 1. the simulated user clicks
        for inst in active:
            t0 = time.perf_counter()
            inst.clicker.make_next_click(inst.pred_mask)
            inst.clicks = inst.clicker.get_clicks()
            inst.result.simulator_times.append(time.perf_counter() - t0)
        # 2. the method, batched
        tm0 = time.perf_counter()
        with torch.inference_mode():
            rois = []
            for inst in active:
                core = inst.slot.core
                core.set_state(inst.state)
                rois.append(core._update_roi(inst.clicks))
            core0 = active[0].slot.core
            t = core0.target_size
            if outside_kw is None:
                outside_kw = core0._outside_kw or ""
            # encode the crops that are not cached (each distinct (image, crop) once)
            states: list[ImageState | None] = []
            todo: OrderedDict[tuple, list[int]] = OrderedDict()
            for i, (inst, roi) in enumerate(zip(active, rois)):
                key = (roi, t, core0.flip)
                cache = inst.slot.core._cache
                if key in cache:
                    cache.move_to_end(key)
                    states.append(cache[key])
                else:
                    states.append(None)
                    todo.setdefault((id(inst.slot), key), []).append(i)
            if todo:
                crops = []
                for users in todo.values():
                    inst = active[users[0]]
                    core = inst.slot.core
                    crops.append(core._batch(core._crop(core._image, rois[users[0]])))
                encoded = model.encode_image(torch.cat(crops, dim=0))
                for j, ((_, key), users) in enumerate(todo.items()):
                    st = encoded.select(slice(j * n_per, (j + 1) * n_per)) if len(todo) > 1 else encoded
                    core = active[users[0]].slot.core
                    core.encode_calls += 1
                    core._cache[key] = st
                    while len(core._cache) > core.cache_size:
                        core._cache.popitem(last=False)
                    for i in users:
                        states[i] = st
            state = ImageState.cat(states)
            prevs, points = [], []
            for inst, roi in zip(active, rois):
                core = inst.slot.core
                h, w = core.image_size
                prev_full = inst.state.prev_probs if inst.state.prev_probs is not None else torch.zeros(1, 1, h, w, device=core.device)
                prevs.append(core._batch(core._crop(prev_full, roi)))
                points.append(core.click_tensor(inst.clicks, roi))
            kwargs = {outside_kw: True} if outside_kw else {}
            logits_all = model.predict_clicks(state, _pad_clicks(points), torch.cat(prevs, dim=0), **kwargs)
            if isinstance(logits_all, tuple):
                logits_all = logits_all[0]
            if tuple(logits_all.shape[-2:]) != (t, t):
                logits_all = F.interpolate(logits_all, size=(t, t), mode="bilinear", align_corners=True)
            probs_np = []
            for i, (inst, roi) in enumerate(zip(active, rois)):
                core = inst.slot.core
                logits = logits_all[i * n_per : (i + 1) * n_per]
                if core.flip:
                    logits = 0.5 * (logits[:1] + torch.flip(logits[1:2], dims=[3]))
                probs = torch.sigmoid(logits.float())
                rmin, rmax, cmin, cmax = roi
                probs = F.interpolate(probs, size=(rmax - rmin + 1, cmax - cmin + 1), mode="bilinear", align_corners=True)
                h, w = core.image_size
                full = torch.zeros(1, 1, h, w, device=core.device, dtype=torch.float32)
                full[:, :, rmin : rmax + 1, cmin : cmax + 1] = probs
                inst.state = PredictorState(full, roi)
                probs_np.append(full[0, 0].cpu().numpy().astype(np.float32, copy=False))
        share = (time.perf_counter() - tm0) / n
        # 3. per instance: threshold, IoU, stop test
        finished = []
        for inst, probs in zip(active, probs_np):
            t0 = time.perf_counter()
            inst.pred_mask = probs > pred_thr
            iou = iou_float64(inst.gt, inst.pred_mask, ignore_label)
            res = inst.result
            res.ious.append(float(np.float32(iou)))
            res.method_times.append(share)
            res.simulator_times[-1] += time.perf_counter() - t0
            res.batch_sizes.append(n)
            res.last_probs = probs
            step = len(res.ious)
            if step >= int(max_clicks) or (stop_at_target and iou >= stop_thr and step >= min_clicks):
                finished.append(inst)
        now = time.perf_counter()
        for inst in active:
            inst.result.wall_s += (now - t_mark) / n
        t_mark = now
        if finished:
            active[:] = [inst for inst in active if inst not in finished]
            for inst in sorted(finished, key=lambda x: x.index):
                inst.result.clicks = inst.clicker.get_clicks()
                inst.slot.users -= 1  # the slot is dropped at the next refill if nobody uses it
                yield inst.result


def evaluate_batch(
    model,
    items: Iterable,
    max_clicks: int = 20,
    batch_size: int = 8,
    zoom_in: bool = True,
    flip: bool = True,
    target_size: int | None = None,
    pred_thr: float = PRED_THRESHOLD,
    device: str | torch.device | None = None,
    **options,
) -> list[BatchSampleResult]:
    """Evaluate instances with the zoom-in + flip predictor, ``batch_size`` of them per forward pass.

    Args:
        model: an iCMFormer model (``encode_image``, ``predict_clicks``, ``default_input_size``);
            put in eval mode here.
        items: ``(image H x W x 3 uint8, gt_mask H x W int, instance_id)`` tuples (any iterable).
            Items holding the same image array share its encode cache.
        max_clicks, pred_thr: the protocol of :func:`~icmformer.evaluation.loop.evaluate_sample`;
            ``target_iou``, ``stop_at_target``, ``min_clicks`` and ``ignore_label`` may be given
            as keywords too.
        batch_size: K, the number of instances per forward pass (2K network inputs with flip).
        zoom_in, flip, target_size, device: as :class:`~icmformer.evaluation.predictor.ZoomFlipPredictor`
            (other keywords such as ``expansion_ratio`` or ``cache_size`` go there as well).

    Returns:
        One :class:`BatchSampleResult` per item, in the order of ``items``.
    """
    results = list(
        iter_evaluate_batch(
            model, items, max_clicks=max_clicks, batch_size=batch_size, zoom_in=zoom_in, flip=flip,
            target_size=target_size, pred_thr=pred_thr, device=device, **options,
        )
    )
    return sorted(results, key=lambda r: r.index)


class ModelMethod:
    """A model-backed evaluation method for :func:`~icmformer.evaluation.runner.run_evaluation`.

    Called with a sample it returns the sequential ``predict_fn`` of
    :func:`~icmformer.evaluation.predictor.make_predict_fn` (the ``batch_size=1`` path); with
    ``batch_size > 1`` the runner calls :meth:`evaluate_items` instead.

    Args:
        model: the model (moved to ``options["device"]`` once, here).
        options: :class:`~icmformer.evaluation.predictor.ZoomFlipPredictor` options (``device``,
            ``zoom_in``, ``flip``, ``target_size``, ...).
    """

    def __init__(self, model, **options) -> None:
        if options.get("device") is not None and hasattr(model, "to"):
            model = model.to(torch.device(options["device"]))
        self.model = model
        self.options = options

    @property
    def device(self) -> torch.device:
        return _model_device(self.model)

    def __call__(self, sample):
        return make_predict_fn(self.model, sample.image, **self.options)

    def evaluate_items(self, items: Iterable, batch_size: int, **protocol) -> Iterator[BatchSampleResult]:
        """Batched results of ``items`` (see :func:`iter_evaluate_batch`), in completion order."""
        return iter_evaluate_batch(self.model, items, batch_size=batch_size, **self.options, **protocol)
