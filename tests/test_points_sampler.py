"""RITM MultiPointSampler behaviour on synthetic masks."""
from __future__ import annotations

import random

import cv2
import numpy as np
import pytest

from icmformer.data.points_sampler import MultiPointSampler, geometric_probs

P = 24


def square(h=64, w=64, y0=20, y1=44, x0=16, x1=40) -> np.ndarray:
    m = np.zeros((h, w), np.int32)
    m[y0:y1, x0:x1] = 1
    return m


def split(clicks: np.ndarray, p: int = P):
    pos, neg = clicks[:p], clicks[p:]
    return pos[pos[:, 2] == 1], neg[neg[:, 2] == 0]


def check_layout(clicks: np.ndarray, p: int = P):
    assert clicks.shape == (2 * p, 3) and clicks.dtype == np.float32
    for half, label in ((clicks[:p], 1), (clicks[p:], 0)):
        real = half[:, 2] == label
        n = int(real.sum())
        assert real[:n].all(), "real clicks must come first in each half"
        assert (half[n:] == -1).all(), "padding rows are (-1, -1, -1)"
        assert set(np.unique(half[:, 2])) <= {label, -1}


def test_geometric_probs():
    p = geometric_probs(24, 0.8)
    assert p.sum() == pytest.approx(1.0)
    assert p[1] / p[0] == pytest.approx(0.8) and p[23] / p[22] == pytest.approx(0.8)


def test_positive_inside_eroded_object_negative_outside():
    m = square()
    eroded = cv2.erode(m.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=3).astype(bool)
    sampler = MultiPointSampler(positive_erode_prob=1.0, merge_objects_prob=0.0)
    total_neg = 0
    for s in range(40):
        mask, clicks = sampler.sample([m], np.random.default_rng(s))
        check_layout(clicks)
        np.testing.assert_array_equal(mask, m)
        pos, neg = split(clicks)
        assert 1 <= len(pos) <= P
        ys, xs = pos[:, 0].astype(int), pos[:, 1].astype(int)
        assert eroded[ys, xs].all()
        ys, xs = neg[:, 0].astype(int), neg[:, 1].astype(int)
        assert (m[ys, xs] == 0).all()
        total_neg += len(neg)
    assert total_neg > 0


def test_without_erosion_positives_reach_the_object_border():
    m = square()
    sampler = MultiPointSampler(positive_erode_prob=0.0, prob_gamma=1.0)  # uniform counts: many clicks
    eroded = cv2.erode(m.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=3).astype(bool)
    outside_eroded = 0
    for s in range(20):
        _, clicks = sampler.sample([m], np.random.default_rng(s))
        pos, _ = split(clicks)
        ys, xs = pos[:, 0].astype(int), pos[:, 1].astype(int)
        assert (m[ys, xs] == 1).all()
        outside_eroded += int((~eroded[ys, xs]).sum())
    assert outside_eroded > 0


def test_border_negatives_lie_in_the_band():
    m = square()
    area = int(m.sum())
    r = int(np.ceil(0.1 * np.sqrt(area)))
    band = cv2.dilate(m.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=r).astype(bool) & (m == 0)
    sampler = MultiPointSampler(negative_bg_prob=0.0, negative_other_prob=0.0, negative_border_prob=1.0, prob_gamma=1.0)
    n = 0
    for s in range(20):
        _, clicks = sampler.sample([m], np.random.default_rng(s))
        _, neg = split(clicks)
        assert band[neg[:, 0].astype(int), neg[:, 1].astype(int)].all()
        n += len(neg)
    assert n > 20


def test_other_negatives_lie_on_other_objects():
    a = square(y0=5, y1=20, x0=5, x1=20)
    b = square(y0=40, y1=60, x0=40, x1=60)
    sampler = MultiPointSampler(negative_bg_prob=0.0, negative_other_prob=1.0, negative_border_prob=0.0,
                                merge_objects_prob=0.0, prob_gamma=1.0)
    for s in range(20):
        mask, clicks = sampler.sample([a, b], np.random.default_rng(s))
        other = b if (mask == a).all() else a
        _, neg = split(clicks)
        assert (other[neg[:, 0].astype(int), neg[:, 1].astype(int)] == 1).all()
    # the only object selected: "other" falls back to background
    mask, clicks = sampler.sample([a], np.random.default_rng(0))
    _, neg = split(clicks)
    assert (a[neg[:, 0].astype(int), neg[:, 1].astype(int)] == 0).all()


def test_merging_objects():
    a = square(y0=5, y1=20, x0=5, x1=20)
    b = square(y0=40, y1=60, x0=40, x1=60)
    sampler = MultiPointSampler(merge_objects_prob=1.0, max_num_merged_objects=2, positive_erode_prob=0.0)
    for s in range(10):
        mask, clicks = sampler.sample([a, b], np.random.default_rng(s))
        np.testing.assert_array_equal(mask, np.maximum(a, b))
        pos, neg = split(clicks)
        assert len(pos) >= 2 and len(pos) <= P
        ys, xs = pos[:, 0].astype(int), pos[:, 1].astype(int)
        assert (mask[ys, xs] == 1).all()
        assert a[ys[0], xs[0]] == 1 or b[ys[0], xs[0]] == 1
        assert {a[ys[0], xs[0]], a[ys[1], xs[1]]} == {0, 1}, "first click of each object"
        assert (mask[neg[:, 0].astype(int), neg[:, 1].astype(int)] == 0).all()


def test_merge_probability_and_limits():
    masks = [square(y0=i * 8, y1=i * 8 + 6, x0=0, x1=6) for i in range(6)]
    sampler = MultiPointSampler(merge_objects_prob=0.5, max_num_merged_objects=3)
    sizes = []
    for s in range(200):
        mask, _ = sampler.sample(masks, np.random.default_rng(s))
        sizes.append(sum(int(((mask == 1) & (m == 1)).any()) for m in masks))
    sizes = np.array(sizes)
    assert set(sizes) == {1, 2, 3}
    assert 0.35 < (sizes > 1).mean() < 0.65


def test_click_counts_follow_the_distribution_and_limits():
    m = square()
    sampler = MultiPointSampler(max_num_points=6, prob_gamma=0.5, positive_erode_prob=0.0)
    n_pos = []
    for s in range(600):
        _, clicks = sampler.sample([m], np.random.default_rng(s))
        check_layout(clicks, 6)
        pos, neg = split(clicks, 6)
        assert 1 <= len(pos) <= 6 and 0 <= len(neg) <= 6
        n_pos.append(len(pos))
    freq = np.bincount(n_pos, minlength=7)[1:] / len(n_pos)
    np.testing.assert_allclose(freq, geometric_probs(6, 0.5), atol=0.05)


def test_same_seed_same_clicks_and_different_seeds_differ():
    m = square()
    sampler = MultiPointSampler()
    m1, c1 = sampler.sample([m, square(y0=0, y1=10)], np.random.default_rng(7))
    np.random.seed(123)  # the global RNGs play no part
    random.seed(123)
    m2, c2 = sampler.sample([m, square(y0=0, y1=10)], np.random.default_rng(7))
    np.testing.assert_array_equal(c1, c2)
    np.testing.assert_array_equal(m1, m2)
    others = [sampler.sample([m], np.random.default_rng(s))[1] for s in range(8, 12)]
    assert any(not np.array_equal(c1, o) for o in others)


def test_ignore_pixels_never_clicked():
    m = square()
    m[:, :30] = np.where(m[:, :30] == 1, 1, -1)  # left part of the background is ignored
    sampler = MultiPointSampler(prob_gamma=1.0)
    for s in range(20):
        mask, clicks = sampler.sample([m], np.random.default_rng(s))
        assert (mask == -1).sum() == (m == -1).sum()
        real = clicks[clicks[:, 2] >= 0]
        assert (m[real[:, 0].astype(int), real[:, 1].astype(int)] != -1).all()


def test_no_objects_gives_background_and_negatives_only():
    sampler = MultiPointSampler(prob_gamma=1.0)
    ignore = np.zeros((20, 30), bool)
    ignore[:5] = True
    mask, clicks = sampler.sample([], np.random.default_rng(0), ignore=ignore)
    assert mask.shape == (20, 30) and (mask[5:] == 0).all() and (mask[:5] == -1).all()
    pos, neg = split(clicks)
    assert len(pos) == 0
    assert (neg[:, 0] >= 5).all()
    with pytest.raises(ValueError, match="shape"):
        sampler.sample([], np.random.default_rng(0))


def test_first_click_center():
    m = square(y0=0, y1=60, x0=0, x1=60)
    sampler = MultiPointSampler(first_click_center=True, positive_erode_prob=0.0)
    for s in range(10):
        _, clicks = sampler.sample([m], np.random.default_rng(s))
        y, x = clicks[0, :2]
        assert 12 <= y <= 47 and 12 <= x <= 47  # dt > max/1.7 of a 60x60 square at the corner


def test_bad_arguments():
    with pytest.raises(ValueError, match="must be 1"):
        MultiPointSampler(negative_bg_prob=0.5, negative_other_prob=0.5, negative_border_prob=0.5)
    with pytest.raises(ValueError, match="max_num_points"):
        MultiPointSampler(max_num_points=0)
