"""The click simulator against known answers and a brute-force oracle of RITM's rule."""
from __future__ import annotations

import numpy as np
import pytest

from icmformer.evaluation.clicker import Click, Clicker


def brute_force_click(gt: np.ndarray, pred: np.ndarray, not_clicked: np.ndarray) -> tuple[bool, tuple[int, int]]:
    """RITM's rule written independently: squared Euclidean distance of every region pixel to the
    nearest non-region pixel, where everything outside the image is non-region."""
    h, w = gt.shape
    valid = gt != -1
    obj = gt == 1
    fn = obj & ~pred & valid
    fp = ~obj & pred & valid

    def sq_dt(region):
        padded = np.zeros((h + 2, w + 2), bool)
        padded[1:-1, 1:-1] = region
        zy, zx = np.nonzero(~padded)
        out = np.zeros((h, w), np.int64)
        for y, x in zip(*np.nonzero(region)):
            out[y, x] = ((zy - (y + 1)) ** 2 + (zx - (x + 1)) ** 2).min()
        return out * not_clicked

    dfn, dfp = sq_dt(fn), sq_dt(fp)
    positive = dfn.max() > dfp.max()
    d = dfn if positive else dfp
    flat = int(np.flatnonzero(d.ravel() == d.max())[0])  # raster order: row, then column
    return bool(positive), (flat // w, flat % w)


def test_first_click_odd_square_centre():
    gt = np.zeros((21, 21), np.int32)
    gt[5:16, 5:16] = 1
    click = Clicker(gt).make_next_click(np.zeros_like(gt, bool))
    assert click.is_positive and click.coords == (10, 10) and click.index == 0


def test_even_square_tie_goes_to_first_max():
    gt = np.zeros((20, 20), np.int32)
    gt[5:15, 5:15] = 1  # centre pixels (9,9) (9,10) (10,9) (10,10) all at distance 5
    click = Clicker(gt).make_next_click(np.zeros_like(gt, bool))
    assert click.coords == (9, 9)


def test_image_border_counts_as_boundary():
    gt = np.ones((11, 5), np.int32)  # the object fills the image
    click = Clicker(gt).make_next_click(np.zeros_like(gt, bool))
    # column 2 is 3 px from the left/right image edges; rows 2..8 are >= 3 px from top/bottom,
    # so the first maximum is (2, 2) (without the padding there would be no boundary at all)
    assert click.coords == (2, 2)


def test_ring_is_clicked_on_the_ring_not_in_the_hole():
    yy, xx = np.mgrid[:61, :61]
    r = np.hypot(yy - 30, xx - 30)
    gt = ((r <= 20) & (r >= 10)).astype(np.int32)
    click = Clicker(gt).make_next_click(np.zeros_like(gt, bool))
    y, x = click.coords
    assert click.is_positive and gt[y, x] == 1
    assert 13.5 <= np.hypot(y - 30, x - 30) <= 16.5
    assert (click.is_positive, click.coords) == brute_force_click(gt, np.zeros_like(gt, bool), np.ones_like(gt, bool))


def test_two_blobs_larger_wins():
    gt = np.zeros((30, 40), np.int32)
    gt[2:7, 2:7] = 1  # 5x5
    gt[10:21, 20:31] = 1  # 11x11, centre (15, 25)
    click = Clicker(gt).make_next_click(np.zeros_like(gt, bool))
    assert click.coords == (15, 25)


def test_ignore_region_never_clicked_and_not_counted_as_error():
    gt = np.full((40, 40), -1, np.int32)  # a huge ignore area
    gt[:, :5] = 0
    gt[20:27, 10:17] = 1  # small object, centre (23, 13)
    pred = gt == -1  # predicting the ignore area is no false positive
    click = Clicker(gt).make_next_click(pred)
    assert click.is_positive and click.coords == (23, 13)
    # with a perfect prediction the ignore area still gets no click: negative at (0, 0)
    click = Clicker(gt).make_next_click((gt == 1) | (gt == -1))
    assert not click.is_positive and click.coords == (0, 0)


def test_grabcut_style_ignore_band_acts_as_boundary():
    gt = np.zeros((21, 21), np.int32)
    gt[3:18, 3:18] = -1
    gt[5:16, 5:16] = 1  # object inside an ignore band
    clicker = Clicker(gt)
    for _ in range(5):
        c = clicker.make_next_click(np.zeros_like(gt, bool))
        assert gt[c.coords] == 1


def test_already_clicked_pixels_are_excluded():
    gt = np.zeros((21, 21), np.int32)
    gt[5:16, 5:16] = 1
    clicker = Clicker(gt)
    empty = np.zeros_like(gt, bool)
    first = clicker.make_next_click(empty)
    second = clicker.make_next_click(empty)
    assert first.coords == (10, 10)
    assert second.coords == (9, 9) and second.is_positive and second.index == 1
    not_clicked = np.ones_like(gt, bool)
    not_clicked[10, 10] = not_clicked[9, 9] = False
    third = clicker.make_next_click(empty)
    assert (third.is_positive, third.coords) == brute_force_click(gt, empty, not_clicked)


def test_tie_between_fn_and_fp_goes_negative():
    gt = np.zeros((20, 30), np.int32)
    gt[2:9, 2:9] = 1  # missed 7x7 object (fn)
    pred = np.zeros_like(gt, bool)
    pred[10:17, 15:22] = True  # 7x7 false alarm, centre (13, 18)
    click = Clicker(gt).make_next_click(pred)
    assert not click.is_positive and click.coords == (13, 18)


def test_larger_fn_gives_positive_larger_fp_negative():
    gt = np.zeros((30, 30), np.int32)
    gt[2:13, 2:13] = 1
    pred = np.zeros_like(gt, bool)
    pred[20:25, 20:25] = True
    assert Clicker(gt).make_next_click(pred).is_positive
    pred[15:30, 15:30] = True
    c = Clicker(gt).make_next_click(pred)
    assert not c.is_positive and pred[c.coords] and gt[c.coords] == 0


def test_perfect_mask_gives_negative_click_at_origin():
    gt = np.zeros((10, 12), np.int32)
    gt[3:7, 4:9] = 1
    click = Clicker(gt).make_next_click(gt == 1)
    assert click == Click(False, (0, 0), 0)


@pytest.mark.parametrize("seed", range(6))
def test_matches_brute_force_on_random_masks(seed):
    rng = np.random.default_rng(seed)
    h, w = 17, 23
    gt = (rng.random((h, w)) < 0.5).astype(np.int32)
    gt = np.maximum(gt, np.roll(gt, 1, axis=0))  # blobs, not salt and pepper
    gt[rng.random((h, w)) < 0.08] = -1
    pred = rng.random((h, w)) < 0.4
    clicker = Clicker(gt)
    not_clicked = np.ones((h, w), bool)
    for _ in range(4):
        expected = brute_force_click(gt, pred, not_clicked)
        c = clicker.make_next_click(pred)
        assert (c.is_positive, c.coords) == expected
        not_clicked[c.coords] = False


def test_state_len_reset_and_copies():
    gt = np.zeros((9, 9), np.int32)
    gt[2:7, 2:7] = 1
    clicker = Clicker(gt)
    clicker.make_next_click(np.zeros_like(gt, bool))
    clicker.make_next_click(np.zeros_like(gt, bool))
    assert len(clicker) == 2 and [c.index for c in clicker.get_clicks()] == [0, 1]
    clicks = clicker.get_clicks()
    clicks.clear()
    assert len(clicker) == 2
    clicker.reset()
    assert len(clicker) == 0
    assert clicker.make_next_click(np.zeros_like(gt, bool)).coords == (4, 4)  # clicked map was reset


def test_bad_prediction_shape_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        Clicker(np.zeros((5, 5), np.int32)).make_next_click(np.zeros((5, 6), bool))
