"""Next-click simulation of iterative training on synthetic prediction / ground-truth pairs."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from icmformer.training.iterative import (
    add_next_clicks,
    error_distance_maps,
    keep_first_click,
    next_click,
    sample_num_iters,
)

P = 4


def empty_clicks(b: int = 1, p: int = P) -> torch.Tensor:
    return torch.full((b, 2 * p, 3), -1.0)


def dt_of(region: np.ndarray) -> np.ndarray:
    return cv2.distanceTransform(np.pad(region.astype(np.uint8), 1), cv2.DIST_L2, 5)[1:-1, 1:-1]


def fn_case():
    """A large missed object part (FN, 20x20) and a small false positive (FP, 6x6)."""
    gt = np.zeros((64, 64), np.int32)
    gt[10:50, 10:50] = 1
    prob = np.zeros((64, 64), np.float32)
    prob[10:50, 10:30] = 0.9  # the left half of the object is found
    prob[55:61, 55:61] = 0.8  # a small false positive
    return prob, gt


def fp_case():
    gt = np.zeros((64, 64), np.int32)
    gt[5:15, 5:15] = 1
    prob = np.zeros((64, 64), np.float32)
    prob[5:15, 5:13] = 0.9  # small FN strip (10 x 2)
    prob[25:60, 20:60] = 0.95  # big FP block
    return prob, gt


def test_positive_click_in_the_larger_fn_region_inside_half_max():
    prob, gt = fn_case()
    fn = (gt == 1) & (prob < 0.49)
    dt = dt_of(fn)
    seen = set()
    for s in range(30):
        c = next_click(prob, gt, np.random.default_rng(s))
        assert c is not None and c.is_positive
        assert fn[c.y, c.x]
        assert dt[c.y, c.x] > dt.max() / 2
        seen.add((c.y, c.x))
    assert len(seen) > 5, "the position is random among the candidates"


def test_negative_click_in_the_larger_fp_region():
    prob, gt = fp_case()
    fp = (gt == 0) & (prob > 0.49)
    dt = dt_of(fp)
    for s in range(20):
        c = next_click(prob, gt, np.random.default_rng(s))
        assert c is not None and not c.is_positive
        assert fp[c.y, c.x] and dt[c.y, c.x] > dt.max() / 2


def test_threshold_049_and_ties_go_negative():
    gt = np.zeros((20, 20), np.int32)
    gt[2:8, 2:8] = 1
    prob = np.full((20, 20), 0.49, np.float32)  # exactly at threshold: neither FN (<) nor FP (>) outside
    prob[gt == 1] = 0.9
    assert next_click(prob, gt, np.random.default_rng(0)) is None
    # equal-size FN and FP squares: tie -> negative
    prob = np.zeros((20, 20), np.float32)
    prob[12:18, 12:18] = 0.9
    c = next_click(prob, gt, np.random.default_rng(0))
    assert c is not None and not c.is_positive and 12 <= c.y < 18


def test_ignore_pixels_never_clicked():
    gt = np.full((40, 40), -1, np.int32)
    gt[10:30, 10:30] = 1
    prob = np.ones((40, 40), np.float32)  # the whole ignore area is predicted foreground
    prob[10:30, 10:14] = 0.0  # a small FN strip
    for s in range(20):
        c = next_click(prob, gt, np.random.default_rng(s))
        assert c is not None and c.is_positive and gt[c.y, c.x] == 1
    fn_dt, fp_dt = error_distance_maps(prob, gt)
    assert fp_dt.max() == 0


def test_center_border_mode():
    prob, gt = fn_case()
    fn = (gt == 1) & (prob < 0.49)
    dt = dt_of(fn)
    centres, borders = 0, 0
    for s in range(60):
        c = next_click(prob, gt, np.random.default_rng(s), mode="center_border", center_prob=0.5)
        assert c.is_positive and fn[c.y, c.x]
        if dt[c.y, c.x] == dt.max():
            centres += 1
        else:
            assert 0 < dt[c.y, c.x] <= dt.max() / 2
            borders += 1
    assert centres > 10 and borders > 10
    always_centre = next_click(prob, gt, np.random.default_rng(0), mode="center_border", center_prob=1.0)
    assert dt[always_centre.y, always_centre.x] == dt.max()
    with pytest.raises(ValueError, match="mode"):
        next_click(prob, gt, np.random.default_rng(0), mode="nope")


def test_add_next_clicks_fills_next_free_slot():
    prob_a, gt_a = fn_case()
    prob_b, gt_b = fp_case()
    prob = torch.from_numpy(np.stack([prob_a, prob_b, gt_a.astype(np.float32)]))[:, None]
    gt = torch.from_numpy(np.stack([gt_a, gt_b, gt_a]).astype(np.float32))[:, None]
    clicks = empty_clicks(3)
    clicks[0, 0] = torch.tensor([30.0, 20.0, 1.0])  # an existing positive click
    clicks[1, P] = torch.tensor([40.0, 40.0, 0.0])  # an existing negative click
    out = add_next_clicks(prob, gt, clicks, np.random.default_rng(0))
    assert out.shape == clicks.shape and out is not clicks
    torch.testing.assert_close(clicks[:, :, 2][clicks[:, :, 2] >= 0], out[:, :, 2][clicks[:, :, 2] >= 0])
    assert out[0, 1, 2] == 1 and (out[0, 2:] == clicks[0, 2:]).all()  # sample 0: positive at slot 1
    assert out[1, P + 1, 2] == 0 and (out[1, :P + 1] == clicks[1, :P + 1]).all()  # sample 1: negative slot P+1
    assert (out[2] == clicks[2]).all()  # perfect prediction: nothing added
    # second pass writes to the following slot
    out2 = add_next_clicks(prob, gt, out, np.random.default_rng(1), step=2)
    assert out2[0, 2, 2] == 1 and out2[1, P + 2, 2] == 0


def test_full_half_uses_the_official_slot():
    prob, gt = fn_case()
    clicks = empty_clicks(1)
    clicks[0, :P] = torch.tensor([[20.0, 20.0, 1.0]] * P)
    out = add_next_clicks(torch.from_numpy(prob)[None, None], torch.from_numpy(gt.astype(np.float32))[None, None],
                          clicks, np.random.default_rng(0), step=1)
    assert (out[0, : P - 1] == clicks[0, : P - 1]).all()
    assert (out[0, P - 1] != clicks[0, P - 1]).any() and out[0, P - 1, 2] == 1


def test_seeded_and_shape_checks():
    prob, gt = fn_case()
    pt = torch.from_numpy(prob)[None, None]
    gtt = torch.from_numpy(gt.astype(np.float32))[None, None]
    a = add_next_clicks(pt, gtt, empty_clicks(), np.random.default_rng(3))
    b = add_next_clicks(pt, gtt, empty_clicks(), np.random.default_rng(3))
    assert torch.equal(a, b)
    with pytest.raises(ValueError):
        add_next_clicks(pt[0], gtt[0], empty_clicks(), np.random.default_rng(0))


def test_sample_num_iters():
    rng = np.random.default_rng(0)
    draws = [sample_num_iters(rng, 3) for _ in range(400)]
    assert set(draws) == {0, 1, 2, 3}
    assert sample_num_iters(rng, 0) == 0


def test_keep_first_click_reduces_the_chosen_samples_to_the_evaluations_start():
    clicks = empty_clicks(3)
    clicks[:, 0] = torch.tensor([5.0, 6.0, 1.0])  # first positive click
    clicks[:, 1] = torch.tensor([7.0, 8.0, 1.0])  # a second positive
    clicks[:, P] = torch.tensor([1.0, 2.0, 0.0])  # a negative
    clicks[2, 0] = -1.0  # sample 2 has no first positive: nothing to keep, left as it is
    out = keep_first_click(clicks, [True, False, True])
    assert out[0, 0].tolist() == [5.0, 6.0, 1.0]
    assert (out[0, 1:] == -1).all()  # every other row of a chosen sample is padding
    torch.testing.assert_close(out[1], clicks[1], rtol=0, atol=0)  # not chosen: unchanged
    torch.testing.assert_close(out[2], clicks[2], rtol=0, atol=0)
    assert clicks[0, 1, 2] == 1.0  # the input is not modified
    # the next pass adds its click after the kept one, as the evaluation's click 2
    prob = torch.zeros(3, 1, 16, 16)
    gt = torch.zeros(3, 1, 16, 16)
    gt[:, :, 4:12, 4:12] = 1
    nxt = add_next_clicks(prob, gt, out, np.random.default_rng(0))
    assert nxt[0, 1, 2] == 1.0 and (nxt[0, 2:, 2] == -1).all()
    with pytest.raises(ValueError, match="one per sample"):
        keep_first_click(clicks, [True])
