"""The zoom-in + flip evaluation predictor against hand-computed values, with a fake model."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from icmformer.evaluation.clicker import Click
from icmformer.evaluation.predictor import (
    Predictor,
    PredictorState,
    ZoomFlipPredictor,
    bbox_iou,
    check_object_roi,
    clamp_bbox,
    expand_bbox,
    get_object_roi,
    make_predict_fn,
    map_clicks,
)


class FakeModel:
    """Implements the model contract; records its inputs. Logits: ``logit_fn`` or, by default,
    +10 inside radius-``r`` disks around positive clicks, -10 elsewhere (in network pixels)."""

    def __init__(self, size=32, logit_fn=None, r=4.0):
        self.default_input_size = size
        self.logit_fn = logit_fn
        self.r = r
        self.encoded = []
        self.calls = []

    def encode_image(self, img):
        self.encoded.append(img.clone())
        return {"img": img}

    def predict_clicks(self, state, clicks, prev_mask, allow_outside_clicks=False):
        self.calls.append({"clicks": clicks.clone(), "prev": prev_mask.clone(), "allow": allow_outside_clicks, "img": state["img"]})
        b, _, h, w = state["img"].shape
        if self.logit_fn is not None:
            return self.logit_fn(b, h, w)
        yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
        out = torch.full((b, 1, h, w), -10.0)
        for i in range(b):
            for y, x, label in clicks[i].tolist():
                if label == 1:
                    out[i, 0][(yy - y) ** 2 + (xx - x) ** 2 <= self.r**2] = 10.0
        return out


def pos(y, x, i=0):
    return Click(True, (y, x), i)


def neg(y, x, i=0):
    return Click(False, (y, x), i)


# ------------------------------------------------------------------------------ geometry
def test_expand_bbox_rounds_half_to_even_and_respects_min_size():
    # centre 124.5 / 249.5, sides max(1.4 * 50, 200) = 200 and max(1.4 * 100, 200) = 200:
    # 24.5 -> 24, 224.5 -> 224, 149.5 -> 150, 349.5 -> 350 (round half to even)
    assert expand_bbox((100, 149, 200, 299), 1.4, 200) == (24, 224, 150, 350)
    # large box: 1.4 * 300 = 420 rows around 159.5 -> (-50.5, 369.5) -> (-50, 370)
    assert expand_bbox((10, 309, 0, 99), 1.4, 200) == (-50, 370, -50, 150)
    assert clamp_bbox((-50, 370, -50, 150), 0, 319, 0, 479) == (0, 319, 0, 150)


def test_bbox_iou_is_the_product_of_interval_ious():
    assert bbox_iou((0, 99, 0, 99), (50, 149, 0, 99)) == pytest.approx(50 / 150)
    assert bbox_iou((0, 9, 0, 9), (0, 9, 5, 14)) == pytest.approx(5 / 15)
    assert bbox_iou((0, 9, 0, 9), (20, 29, 0, 9)) == 0.0


def test_check_object_roi_is_strict_on_the_max_side():
    roi = (24, 224, 150, 350)
    assert check_object_roi(roi, [pos(223, 349), pos(24, 150)])
    assert not check_object_roi(roi, [pos(224, 200)])
    assert not check_object_roi(roi, [pos(100, 350)])
    assert not check_object_roi(roi, [pos(23, 200)])
    assert check_object_roi(roi, [neg(0, 0), neg(400, 500)])  # negatives never move the ROI


def test_object_roi_adds_positive_clicks():
    mask = np.zeros((400, 600), bool)
    mask[110:160, 200:300] = True
    assert get_object_roi(mask, [pos(224, 250), neg(399, 599)]) == (67, 267, 150, 350)


def test_map_clicks_flip_and_padding_rows():
    roi = (24, 224, 150, 350)  # 201 x 201 crop
    rows = map_clicks([pos(120, 250), neg(10, 10)], roi, 448)
    assert rows[0] == pytest.approx([448 * 96 / 201, 448 * 100 / 201, 1])
    assert rows[1].tolist() == [-1, -1, -1]  # both coordinates negative: dropped as the official DistMaps
    flipped = map_clicks([pos(120, 250), neg(10, 10)], roi, 448, flip=True)
    assert flipped[0] == pytest.approx([448 * 96 / 201, 448 - 448 * 100 / 201 - 1, 1])
    # flipped, the negative click has x'' > 0: it stays a (partly outside) click
    assert flipped[1] == pytest.approx([448 * -14 / 201, 448 + 448 * 140 / 201 - 1, 0])


# ------------------------------------------------------------------------------ predictor
def test_first_click_whole_image_flip_batch_and_click_mapping():
    model = FakeModel(size=32)
    image = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    core = ZoomFlipPredictor(model)
    core.set_image(image)
    probs = core.predict([pos(20, 30)])
    assert core.roi == (0, 39, 0, 59) and probs.shape == (40, 60) and probs.dtype == np.float32
    (img,) = model.encoded
    full = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    expected = F.interpolate(full, size=(32, 32), mode="bilinear", align_corners=True)
    assert img.shape == (2, 3, 32, 32)
    assert torch.allclose(img[0:1], expected) and torch.equal(img[1], torch.flip(img[0], dims=[2]))
    call = model.calls[0]
    assert call["allow"] is True
    # y' = 32 * 20 / 40 = 16, x' = 32 * 30 / 60 = 16, flipped x'' = 32 - 16 - 1 = 15
    assert call["clicks"].tolist() == [[[16.0, 16.0, 1.0]], [[16.0, 15.0, 1.0]]]
    assert call["prev"].shape == (2, 1, 32, 32) and call["prev"].abs().sum() == 0


def test_flip_averages_in_logit_space():
    a = torch.linspace(-4, 4, 32 * 32).view(1, 1, 32, 32)
    b = torch.linspace(3, -1, 32 * 32).view(1, 1, 32, 32) ** 2 - 2
    model = FakeModel(size=32, logit_fn=lambda bs, h, w: torch.cat([a, b])[:bs])
    core = ZoomFlipPredictor(model)
    core.set_image(np.zeros((32, 32, 3), np.uint8))  # same size as the network input: no resizing
    probs = core.predict([pos(5, 5)])
    expected = torch.sigmoid(0.5 * (a + torch.flip(b, dims=[3])))[0, 0].numpy()
    assert np.allclose(probs, expected, atol=1e-6)
    not_prob_average = 0.5 * (torch.sigmoid(a) + torch.flip(torch.sigmoid(b), dims=[3]))[0, 0].numpy()
    assert not np.allclose(probs, not_prob_average, atol=1e-3)
    no_flip = ZoomFlipPredictor(model, flip=False)
    no_flip.set_image(np.zeros((32, 32, 3), np.uint8))
    assert np.allclose(no_flip.predict([pos(5, 5)]), torch.sigmoid(a)[0, 0].numpy(), atol=1e-6)
    assert model.calls[-1]["clicks"].shape == (1, 1, 3)


def _zoom_setup(prev_rows, prev_cols, logit=5.0):
    model = FakeModel(size=448, logit_fn=lambda bs, h, w: torch.full((bs, 1, h, w), logit))
    core = ZoomFlipPredictor(model)
    core.set_image(np.zeros((400, 600, 3), np.uint8))
    prev = torch.zeros(1, 1, 400, 600)
    prev[..., prev_rows[0] : prev_rows[1], prev_cols[0] : prev_cols[1]] = 0.9
    return model, core, prev


def test_zoom_in_recomputes_roi_when_bbox_iou_is_low():
    model, core, prev = _zoom_setup((100, 150), (200, 300))
    core.set_state(PredictorState(prev, (0, 399, 0, 599)))
    probs = core.predict([pos(120, 250), neg(10, 10, 1)])
    # candidate (24, 224, 150, 350) has bbox IoU (201/400) * (201/600) = 0.168 < 0.5 with the
    # whole image, so it replaces the stored ROI
    assert core.roi == (24, 224, 150, 350)
    call = model.calls[-1]
    got = call["clicks"].numpy()
    assert got.dtype == np.float32
    assert np.allclose(got[0], [[448 * 96 / 201, 448 * 100 / 201, 1], [-1, -1, -1]], rtol=1e-6)
    assert np.allclose(
        got[1], [[448 * 96 / 201, 448 - 448 * 100 / 201 - 1, 1], [448 * -14 / 201, 448 + 448 * 140 / 201 - 1, 0]], rtol=1e-6
    )
    expected_prev = F.interpolate(prev[..., 24:225, 150:351], size=(448, 448), mode="bilinear", align_corners=True)
    assert torch.allclose(call["prev"][0:1], expected_prev)
    assert torch.allclose(call["prev"][1:2], torch.flip(expected_prev, dims=[3]))
    # pasted into a zero map: sigmoid(5) inside the ROI, exactly 0 outside
    inside = probs[24:225, 150:351]
    assert np.allclose(inside, 1 / (1 + np.exp(-5.0)), atol=1e-6)
    outside = probs.copy()
    outside[24:225, 150:351] = 0
    assert not outside.any()
    assert len(model.encoded) == 1 and model.encoded[0].shape == (2, 3, 448, 448)


def test_zoom_in_keeps_roi_unless_a_positive_click_reaches_the_max_side():
    stored = (24, 224, 150, 350)
    model, core, prev = _zoom_setup((110, 160), (200, 300))
    core.set_state(PredictorState(prev, stored))
    # candidate would be (66, 266, 150, 350): bbox IoU 159/243 = 0.65 >= 0.5, clicks inside -> kept
    core.predict([pos(120, 250), pos(223, 250, 1)])
    assert core.roi == stored
    model, core, prev = _zoom_setup((110, 160), (200, 300))
    core.set_state(PredictorState(prev, stored))
    core.predict([pos(120, 250), pos(224, 250, 1)])  # y == rmax counts as outside (strict <)
    assert core.roi == (67, 267, 150, 350)


def test_empty_previous_mask_gives_the_whole_image():
    model, core, prev = _zoom_setup((0, 0), (0, 0))
    core.set_state(PredictorState(prev, (24, 224, 150, 350)))
    core.predict([pos(120, 250)])
    assert core.roi == (0, 399, 0, 599)  # bbox IoU of the whole image with the stored ROI < 0.5


def test_image_encoding_is_cached_per_roi():
    model = FakeModel(size=32)
    image = np.zeros((40, 60, 3), np.uint8)
    fn = make_predict_fn(model, image, zoom_in=False)
    clicks = [pos(20, 30, 0), neg(2, 2, 1), pos(22, 33, 2), neg(38, 58, 3)]
    for k in range(1, 5):
        fn(clicks[:k])
    fn(clicks[:1])  # a second instance on the same image
    fn(clicks[:2])
    assert len(model.encoded) == 1 and len(model.calls) == 6
    zoom = FakeModel(size=32)
    fn = make_predict_fn(zoom, image)
    fn(clicks[:1])
    fn(clicks[:1])
    assert len(zoom.encoded) == 1  # same (whole-image) ROI for every first click


def test_predict_fn_replays_a_non_incremental_click_list():
    image = np.zeros((50, 70, 3), np.uint8)
    clicks = [pos(25, 35, 0), pos(10, 10, 1), neg(40, 60, 2)]
    step = make_predict_fn(FakeModel(size=32), image)
    for k in range(1, 4):
        expected = step(clicks[:k])
    direct = make_predict_fn(FakeModel(size=32), image)
    direct(clicks[:1])
    assert np.array_equal(direct(clicks), expected)  # list jumped by two clicks: replayed


def test_previous_prediction_is_fed_back():
    model = FakeModel(size=32, r=6)
    core = ZoomFlipPredictor(model, zoom_in=False)
    core.set_image(np.zeros((32, 32, 3), np.uint8))
    first = core.predict([pos(16, 16)])
    core.predict([pos(16, 16), neg(2, 2, 1)])
    assert torch.allclose(model.calls[1]["prev"][0, 0], torch.from_numpy(first))


# ------------------------------------------------------------------------------ interactive Predictor
def test_interactive_predictor_click_undo_reset():
    p = Predictor(FakeModel(size=32, r=3), zoom_in=False)
    with pytest.raises(RuntimeError, match="set_image"):
        p.add_click(1, 1)
    with pytest.raises(ValueError, match="uint8"):
        p.set_image(np.zeros((10, 10), np.float32))
    p.set_image(np.zeros((64, 48, 3), np.uint8))
    m1, p1 = p.add_click(10, 10, positive=True)
    assert m1.shape == (64, 48) and m1.dtype == bool and m1[10, 10] and not m1[50, 40]
    assert p.last_latency_s is not None and p.last_latency_s >= 0
    m2, p2 = p.add_click(50, 40, positive=True)
    assert m2[50, 40] and [c.coords for c in p.clicks] == [(10, 10), (50, 40)]
    m3, p3 = p.undo()
    assert np.array_equal(p3, p1) and len(p.clicks) == 1
    again_m, again_p = p.add_click(50, 40, positive=True)
    assert np.array_equal(again_p, p2)  # the state after undo is the state before the click
    with pytest.raises(ValueError, match=r"\(y=64, x=5\).*64x48"):
        p.add_click(64, 5)
    assert len(p.clicks) == 2  # the failed click changed nothing
    p.reset()
    assert p.clicks == [] and not p.undo()[0].any()


def test_real_model_accepts_negative_clicks_outside_the_crop():
    import icmformer

    model = icmformer.create_model("icmformer_vit_tiny_224")
    core = ZoomFlipPredictor(model)
    core.set_image(np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8))
    prev = torch.zeros(1, 1, 300, 400)
    prev[..., 100:140, 150:200] = 0.9
    core.set_state(PredictorState(prev, (0, 299, 0, 399)))
    probs = core.predict([pos(120, 170), neg(290, 10, 1)])
    rmin, rmax, cmin, cmax = core.roi
    assert not (rmin <= 290 <= rmax and cmin <= 10 <= cmax)  # the negative click is outside the crop
    assert probs.shape == (300, 400) and np.isfinite(probs).all()
