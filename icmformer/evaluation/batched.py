"""Batched evaluation: several instances advance click by click together.

:func:`evaluate_batch` runs the same protocol as :func:`~icmformer.evaluation.loop.evaluate_sample`
with the zoom-in + flip predictor, but up to ``batch_size`` instances (K) at a time, so that one
forward pass serves K instances (2K network inputs with flip). It drives the same protocol core
as the sequential predictor (:class:`~icmformer.evaluation.core.ZoomFlipCore`), with several steps
per call. Each instance keeps its own state, exactly as the sequential path:

- its :class:`~icmformer.evaluation.clicker.Clicker` and current prediction mask;
- its :class:`~icmformer.evaluation.core.ClickState` (previous full-resolution probability map
  and zoom-in ROI);
- the encode cache of its image (an :class:`~icmformer.evaluation.core.ImageEntry`), shared by the
  instances of one image as the per-image predictor of the sequential path shares it. Instances
  share an image when their items hold the *same* image array object (as the masks of one
  :class:`~icmformer.data.sample.Sample` do).

At each click step every active instance makes its next click; then ``core.prepare`` for each,
one ``core.forward`` (the crops no cache holds in one encode call, every instance in one decode
call) and ``core.finish`` per instance (see :mod:`icmformer.evaluation.core`).
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
from collections.abc import Iterable, Iterator

import numpy as np
import torch

from icmformer.evaluation.clicker import Clicker
from icmformer.evaluation.core import ClickState, ImageEntry, ZoomFlipCore, check_image, model_device, pad_clicks
from icmformer.evaluation.loop import ItemResult
from icmformer.evaluation.metrics import iou_float64
from icmformer.evaluation.predictor import make_predict_fn
from icmformer.evaluation.protocol import MAX_CLICKS, PRED_THRESHOLD, TARGET_IOU

BatchSampleResult = ItemResult  # the name of the per-item result before the runner had one loop
_pad_clicks = pad_clicks


class _Instance:
    def __init__(self, index: int, instance_id, entry: ImageEntry, gt_mask: np.ndarray, ignore_label: int) -> None:
        self.index = index
        self.entry = entry
        self.gt = gt_mask
        self.clicker = Clicker(gt_mask, ignore_label=ignore_label)
        self.pred_mask = np.zeros(gt_mask.shape, dtype=bool)
        self.state = ClickState()
        self.result = ItemResult(instance_id=instance_id, index=index)
        self.clicks: list = []


def _check_item(item, index: int):
    try:
        image, gt_mask, instance_id = item
    except (TypeError, ValueError):
        raise ValueError(f"items[{index}] must be a tuple (image H x W x 3 uint8, gt_mask H x W, instance_id)") from None
    image = check_image(image)
    gt_mask = np.asarray(gt_mask)
    if gt_mask.ndim != 2 or gt_mask.shape != image.shape[:2]:
        raise ValueError(
            f"items[{index}] ({instance_id!r}): gt_mask has shape {gt_mask.shape}, expected {image.shape[:2]} "
            "(H x W of its image)"
        )
    return image, gt_mask, instance_id


class _WorkQueue:
    """The active instances (at most ``k``), refilled lazily from ``items``; instances of one image
    array share one :class:`ImageEntry` (and so its encode cache)."""

    def __init__(self, items: Iterable, core: ZoomFlipCore, k: int, ignore_label: int) -> None:
        self.items = iter(items)
        self.core = core
        self.k = k
        self.ignore_label = ignore_label
        self.active: list[_Instance] = []
        self.next_index = 0
        self.exhausted = False
        self.entries: dict[int, tuple[np.ndarray, ImageEntry, int]] = {}  # id(image) -> (image, entry, users)

    def refill(self) -> list[_Instance]:
        while len(self.active) < self.k and not self.exhausted:
            try:
                item = next(self.items)
            except StopIteration:
                self.exhausted = True
                break
            image, gt_mask, instance_id = _check_item(item, self.next_index)
            # the image array is kept in the dict, so its id() stays unique while in use
            held, entry, users = self.entries.get(id(image)) or (image, self.core.add_image(image), 0)
            self.entries[id(image)] = (held, entry, users + 1)
            inst = _Instance(self.next_index, instance_id, entry, gt_mask, self.ignore_label)
            inst.image_key = id(image)
            self.active.append(inst)
            self.next_index += 1
        # Images whose instances are all done are dropped only now, so that the next instance of
        # the same image (items of one sample come one after another) still finds its cache.
        for key in [key for key, (_, _, users) in self.entries.items() if users == 0]:
            del self.entries[key]
        return self.active

    def retire(self, finished: list[_Instance]) -> None:
        self.active[:] = [inst for inst in self.active if inst not in finished]
        for inst in finished:
            image, entry, users = self.entries[inst.image_key]
            self.entries[inst.image_key] = (image, entry, users - 1)


def _predict_step(core: ZoomFlipCore, active: list[_Instance]) -> list[np.ndarray]:
    """One click of every active instance through the core (one encode and one decode call)."""
    steps = [core.prepare(inst.entry, inst.clicks, inst.state) for inst in active]
    out = []
    for inst, (probs, state) in zip(active, core.run(steps)):
        inst.state = state
        out.append(probs)
    return out


def iter_evaluate_batch(
    model,
    items: Iterable,
    max_clicks: int = MAX_CLICKS,
    batch_size: int = 8,
    zoom_in: bool = True,
    flip: bool = True,
    target_size: int | None = None,
    pred_thr: float = PRED_THRESHOLD,
    device: str | torch.device | None = None,
    *,
    target_iou: float = TARGET_IOU,
    stop_at_target: bool = False,
    min_clicks: int = 1,
    ignore_label: int = -1,
    **predictor_options,
) -> Iterator[ItemResult]:
    """Like :func:`evaluate_batch`, but a generator that yields each instance's result as soon as
    it is finished (instances finishing in the same step in input order). ``items`` is consumed
    lazily, only when a batch slot becomes free."""
    if int(max_clicks) < 1:
        raise ValueError(f"max_clicks must be >= 1, got {max_clicks}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    core = ZoomFlipCore(model, device, zoom_in=zoom_in, flip=flip, target_size=target_size, **predictor_options)
    queue = _WorkQueue(items, core, int(batch_size), ignore_label)
    stop_thr = max(0.8, float(target_iou))
    t_mark = time.perf_counter()
    while queue.refill():
        active = queue.active
        n = len(active)
        for inst in active:  # 1. the simulated user clicks
            t0 = time.perf_counter()
            inst.clicker.make_next_click(inst.pred_mask)
            inst.clicks = inst.clicker.get_clicks()
            inst.result.simulator_times.append(time.perf_counter() - t0)
        tm0 = time.perf_counter()  # 2. the method, batched
        probs_all = _predict_step(core, active)
        share = (time.perf_counter() - tm0) / n
        finished = []  # 3. per instance: threshold, IoU, stop test
        for inst, probs in zip(active, probs_all):
            t0 = time.perf_counter()
            inst.pred_mask = probs > pred_thr
            iou = iou_float64(inst.gt, inst.pred_mask, ignore_label)
            res = inst.result
            res.ious.append(float(np.float32(iou)))
            res.method_times.append(share)
            res.simulator_times[-1] += time.perf_counter() - t0
            res.batch_sizes.append(n)
            res.last_probs = probs
            if len(res.ious) >= int(max_clicks) or (stop_at_target and iou >= stop_thr and len(res.ious) >= min_clicks):
                finished.append(inst)
        now = time.perf_counter()
        for inst in active:
            inst.result.wall_s += (now - t_mark) / n
        t_mark = now
        queue.retire(finished)  # their image is dropped at the next refill if nobody uses it
        for inst in sorted(finished, key=lambda x: x.index):
            inst.result.clicks = inst.clicker.get_clicks()
            yield inst.result


def evaluate_batch(model, items: Iterable, batch_size: int = 8, **options) -> list[ItemResult]:
    """Evaluate instances with the zoom-in + flip predictor, ``batch_size`` of them per forward pass.

    Args:
        model: an iCMFormer model (``encode_image``, ``predict_clicks``, ``default_input_size``;
            put in eval mode here) or a :class:`~icmformer.evaluation.core.ModelBackend`.
        items: ``(image H x W x 3 uint8, gt_mask H x W int, instance_id)`` tuples (any iterable).
            Items holding the same image array share its encode cache.
        options: the protocol of :func:`~icmformer.evaluation.loop.evaluate_sample` (``max_clicks``,
            ``pred_thr``, ``target_iou``, ``stop_at_target``, ``min_clicks``, ``ignore_label``)
            and the predictor's (below), as keywords.
        batch_size: K, the number of instances per forward pass (2K network inputs with flip).
        zoom_in, flip, target_size, device: as :class:`~icmformer.evaluation.core.ZoomFlipCore`
            (other keywords such as ``expansion_ratio`` or ``cache_size`` go there as well).

    Returns:
        One :class:`~icmformer.evaluation.loop.ItemResult` per item, in the order of ``items``.
    """
    results = list(iter_evaluate_batch(model, items, batch_size=batch_size, **options))
    return sorted(results, key=lambda r: r.index)


class ModelMethod:
    """A model-backed evaluation method for :func:`~icmformer.evaluation.runner.run_evaluation`.

    :meth:`evaluate_items` runs items through :func:`iter_evaluate_batch` (``batch_size`` 1: one
    instance per forward pass, the same numbers as the sequential predictor). Called with a sample
    it returns the sequential ``predict_fn`` of :func:`~icmformer.evaluation.predictor.make_predict_fn`.

    Args:
        model: the model (moved to ``options["device"]`` once, here).
        options: :class:`~icmformer.evaluation.core.ZoomFlipCore` options (``device``,
            ``zoom_in``, ``flip``, ``target_size``, ...).
    """

    def __init__(self, model, **options) -> None:
        if options.get("device") is not None and hasattr(model, "to"):
            model = model.to(torch.device(options["device"]))
        self.model = model
        self.options = options

    @property
    def device(self) -> torch.device:
        return model_device(self.model)

    def __call__(self, sample):
        return make_predict_fn(self.model, sample.image, **self.options)

    def evaluate_items(self, items: Iterable, batch_size: int, **protocol) -> Iterator[ItemResult]:
        """Results of ``items`` (see :func:`iter_evaluate_batch`), in completion order."""
        return iter_evaluate_batch(self.model, items, batch_size=batch_size, **self.options, **protocol)
