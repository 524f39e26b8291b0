"""The GrabCut baseline: sensible on an easy image, deterministic, honours clicks, replays."""
from __future__ import annotations

import time

import numpy as np
import pytest

from icmformer.evaluation.baselines import GrabCutPredictFn
from icmformer.evaluation.clicker import Click
from icmformer.evaluation.loop import evaluate_sample


def easy_image(h=240, w=360, seed=0):
    """A noisy orange ellipse on a noisy blue-grey background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    obj = ((yy - 110) / 60.0) ** 2 + ((xx - 200) / 90.0) ** 2 <= 1
    img = np.empty((h, w, 3), np.float64)
    img[...] = (70, 90, 120)
    img[obj] = (230, 140, 40)
    img += rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), obj.astype(np.int32)


def test_segments_an_easy_object_with_few_clicks():
    image, gt = easy_image()
    res = evaluate_sample(gt, GrabCutPredictFn(image), max_clicks=3)
    assert res.ious[0] > 0.5 and max(res.ious) > 0.9


def test_output_is_a_float32_map_in_unit_range_and_honours_clicks():
    image, gt = easy_image()
    fn = GrabCutPredictFn(image)
    clicks = [Click(True, (110, 200), 0), Click(False, (10, 10), 1), Click(False, (110, 200 + 85), 2)]
    probs = fn(clicks)
    assert probs.shape == gt.shape and probs.dtype == np.float32
    assert probs.min() >= 0 and probs.max() <= 1
    assert probs[110, 200] == 1.0 and probs[10, 10] == 0.0 and probs[110, 285] == 0.0


def test_deterministic_and_replay_equals_incremental():
    image, gt = easy_image(seed=1)
    a = evaluate_sample(gt, GrabCutPredictFn(image), max_clicks=4)
    b = evaluate_sample(gt, GrabCutPredictFn(image), max_clicks=4)
    assert a.ious == b.ious and a.clicks == b.clicks
    fn = GrabCutPredictFn(image)
    incremental = [fn(a.clicks[:k]) for k in range(1, 5)][-1]
    assert np.array_equal(GrabCutPredictFn(image)(a.clicks), incremental)
    # one object per list of length 1: a second instance starts from scratch
    again = fn(a.clicks[:1])
    assert np.array_equal(again, GrabCutPredictFn(image)(a.clicks[:1]))


def test_downscales_large_images_and_stays_fast():
    image, gt = easy_image(480, 854)
    fn = GrabCutPredictFn(image, max_side=320)
    assert max(fn.work_size) == 320
    t = time.perf_counter()
    res = evaluate_sample(gt, fn, max_clicks=5)
    per_click = (time.perf_counter() - t) / 5
    assert res.ious[-1] > 0.85
    assert per_click < 2.0  # about 0.1-0.2 s on 2 cores; generous against a loaded machine


def test_bad_input():
    with pytest.raises(ValueError, match="uint8"):
        GrabCutPredictFn(np.zeros((10, 10), np.uint8))
    fn = GrabCutPredictFn(np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(ValueError, match="outside"):
        fn([Click(True, (10, 0), 0)])
