"""The per-instance evaluation loop shared by every click-driven method.

:func:`evaluate_sample` is the official ``evaluate_sample`` (OFFICIAL.md section 1e) with a
method-agnostic interface: the method is a ``predict_fn(clicks) -> probability map``. For each
click ``k = 0..max_clicks-1``:

1. ``clicker.make_next_click(pred_mask)`` (``pred_mask`` starts all False);
2. ``probs = predict_fn(clicks)``;
3. ``pred_mask = probs > pred_thr`` (0.49);
4. IoU against the ground truth;
5. optionally stop when ``iou >= target_iou`` and ``k + 1 >= min_clicks``.

By default all ``max_clicks`` clicks are made (needed for the mIoU@k curves; NoC@80/85/90 are the
same either way); ``stop_at_target=True`` reproduces the official early stop (which changes SPC
and the mIoU@k curve, see :mod:`icmformer.evaluation.metrics`). As in the official loop the stop
test compares the float64 IoU with ``max(0.8, target_iou)``; the stored IoUs are float32.

``predict_fn`` receives the full list of clicks so far (the newest last) and is called once per
click of one instance, in order; a stateful method (e.g. the zoom-in predictor that feeds its
previous prediction back) recognises a new instance by a list of length 1.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from icmformer.evaluation.clicker import Click, Clicker
from icmformer.evaluation.metrics import iou_float64, noc
from icmformer.evaluation.protocol import MAX_CLICKS, PRED_THRESHOLD, TARGET_IOU

PredictFn = Callable[[list[Click]], np.ndarray]


@dataclass
class SampleResult:
    """The outcome of one instance.

    Attributes:
        ious: IoU after each click (float32 values, as Python floats).
        clicks: the simulated clicks, in order.
        method_times: wall time of each ``predict_fn`` call (s).
        simulator_times: time of the click simulator plus the IoU for each click (s).
        last_probs: the final probability map (``H x W`` float32).
    """

    ious: list[float] = field(default_factory=list)
    clicks: list[Click] = field(default_factory=list)
    method_times: list[float] = field(default_factory=list)
    simulator_times: list[float] = field(default_factory=list)
    last_probs: np.ndarray | None = None

    @property
    def n_clicks(self) -> int:
        return len(self.ious)

    def noc(self, thr: float, max_clicks: int = MAX_CLICKS) -> int:
        return noc(self.ious, thr, max_clicks)


@dataclass
class ItemResult(SampleResult):
    """A :class:`SampleResult` of one item of an "evaluate these items" run (the runner's
    interface: :func:`evaluate_items` here, the batched evaluator for models).

    Attributes:
        instance_id: the third element of the instance's item, returned as given.
        index: the position of the item in ``items``.
        wall_s: the instance's share of the wall-clock time of the run (loading its image, the
            click simulation, the method, and whatever the consumer did before asking for it).
        batch_sizes: how many instances shared each of its click steps (batched runs).
    """

    instance_id: object = None
    index: int = -1
    wall_s: float = 0.0
    batch_sizes: list[int] = field(default_factory=list)


def _check_probs(probs: object, shape: tuple[int, int], step: int) -> np.ndarray:
    if not isinstance(probs, np.ndarray):
        raise ValueError(
            f"predict_fn must return a numpy float array of shape {shape} (H x W probabilities); "
            f"at click {step + 1} it returned {type(probs).__name__}"
        )
    if probs.shape != shape:
        raise ValueError(
            f"predict_fn returned a map of shape {probs.shape} at click {step + 1}; expected {shape} "
            "(H x W of the ground-truth mask)"
        )
    if not np.issubdtype(probs.dtype, np.floating):
        raise ValueError(
            f"predict_fn must return floating-point probabilities in [0, 1]; got dtype {probs.dtype} "
            f"at click {step + 1}"
        )
    if np.isnan(probs).any():
        raise ValueError(f"predict_fn returned NaN probabilities at click {step + 1}")
    return probs.astype(np.float32, copy=False)


def evaluate_sample(
    gt_mask: np.ndarray,
    predict_fn: PredictFn,
    max_clicks: int = MAX_CLICKS,
    pred_thr: float = PRED_THRESHOLD,
    target_iou: float = TARGET_IOU,
    stop_at_target: bool = False,
    min_clicks: int = 1,
    callback: Callable[[int, list[Click], np.ndarray, float], None] | None = None,
    ignore_label: int = -1,
) -> SampleResult:
    """Simulate clicks on one instance and record the IoU after each.

    Args:
        gt_mask: ``H x W`` int mask (1 object, 0 background, -1 ignore).
        predict_fn: ``predict_fn(clicks) -> H x W float probabilities``.
        max_clicks: click budget (20).
        pred_thr: probability threshold of a prediction (0.49).
        target_iou: IoU at which the official loop stops (its ``max(0.8, target_iou)``).
        stop_at_target: stop early as the official loop does (default: always ``max_clicks``).
        min_clicks: do not stop before this many clicks.
        callback: called after each click as ``callback(step, clicks, probs, iou)``.
        ignore_label: ground-truth value of ignored pixels.

    Raises:
        ValueError: a bad ``gt_mask``/``max_clicks``, or a ``predict_fn`` output that is not an
            ``H x W`` floating-point numpy array.
    """
    gt_mask = np.asarray(gt_mask)
    if gt_mask.ndim != 2:
        raise ValueError(f"gt_mask must be H x W, got shape {gt_mask.shape}")
    if int(max_clicks) < 1:
        raise ValueError(f"max_clicks must be >= 1, got {max_clicks}")
    stop_thr = max(0.8, float(target_iou))
    clicker = Clicker(gt_mask, ignore_label=ignore_label)
    pred_mask = np.zeros(gt_mask.shape, dtype=bool)
    result = SampleResult()
    for step in range(int(max_clicks)):
        t0 = time.perf_counter()
        clicker.make_next_click(pred_mask)
        clicks = clicker.get_clicks()
        t1 = time.perf_counter()
        probs = predict_fn(clicks)
        t2 = time.perf_counter()
        probs = _check_probs(probs, gt_mask.shape, step)
        pred_mask = probs > pred_thr
        iou = iou_float64(gt_mask, pred_mask, ignore_label)
        t3 = time.perf_counter()
        result.ious.append(float(np.float32(iou)))
        result.method_times.append(t2 - t1)
        result.simulator_times.append((t1 - t0) + (t3 - t2))
        result.last_probs = probs
        if callback is not None:
            callback(step, clicks, probs, float(np.float32(iou)))
        if stop_at_target and iou >= stop_thr and step + 1 >= min_clicks:
            break
    result.clicks = clicker.get_clicks()
    return result


def evaluate_items(items: Iterable, method_factory: Callable[[object], PredictFn], source: Callable | None = None, **protocol) -> Iterator[ItemResult]:
    """Evaluate ``(image, gt_mask, instance_id)`` items one at a time with a ``predict_fn`` method.

    ``method_factory(source(item))`` builds the ``predict_fn`` of an image (``source`` defaults to
    the item's image); consecutive items with the same source object share it, so a model encodes
    an image once for all its instances. ``protocol`` goes to :func:`evaluate_sample`. Yields one
    :class:`ItemResult` per item, in order, as soon as it is done (``items`` is read lazily; as in
    the batched evaluator, ``wall_s`` counts from the previous result, so reading the item and
    whatever the consumer did in between are included).
    """
    current, predict_fn = None, None
    t_mark = time.perf_counter()
    for index, item in enumerate(items):
        _, gt_mask, instance_id = item
        arg = item[0] if source is None else source(item)
        if predict_fn is None or arg is not current:
            current, predict_fn = arg, method_factory(arg)
        res = evaluate_sample(gt_mask, predict_fn, **protocol)
        now = time.perf_counter()
        yield ItemResult(res.ious, res.clicks, res.method_times, res.simulator_times, res.last_probs,
                         instance_id=instance_id, index=index, wall_s=now - t_mark)  # fmt: skip
        t_mark = now
