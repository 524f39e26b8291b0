"""IoU, NoC, NoF, mIoU@k and summaries on hand-made IoU sequences."""
from __future__ import annotations

import math

import numpy as np
import pytest

from icmformer.evaluation.metrics import get_iou, iou_at_clicks, mean_noc, miou_curve, noc, nof, summarize


def test_iou_ignores_ignore_pixels():
    gt = np.array([[1, 1, 0, -1], [1, 0, 0, -1]], np.int32)
    pred = np.array([[1, 0, 1, 1], [1, 0, 0, 1]], bool)
    # intersection: (0,0), (1,0) = 2; union (valid only): (0,0), (0,1), (0,2), (1,0) = 4
    iou = get_iou(gt, pred)
    assert iou.dtype == np.float32 and iou == np.float32(0.5)


def test_iou_is_float32_of_the_ratio():
    gt = np.zeros((1, 7), np.int32)
    gt[0, :3] = 1
    pred = np.zeros((1, 7), bool)
    pred[0, :1] = True
    assert get_iou(gt, pred) == np.float32(1 / 3)


def test_noc_first_crossing_and_never_reached():
    ious = [0.5, 0.7, 0.86, 0.91, 0.8]
    assert noc(ious, 0.80) == 3
    assert noc(ious, 0.85) == 3
    assert noc(ious, 0.90) == 4
    assert noc(ious, 0.95, max_clicks=20) == 20  # never reached: max_clicks, not 21


def test_noc_compares_in_float32():
    just_below = float(np.float32(0.9))  # 0.89999997615814...
    assert just_below < 0.9
    assert noc([0.1, just_below], 0.9) == 2
    assert noc([0.1, float(np.nextafter(np.float32(0.9), np.float32(0)))], 0.9, max_clicks=20) == 20


def test_nof_counts_never_reached_and_reached_at_the_last_click():
    reach_at_20 = [0.5] * 19 + [0.95]
    never = [0.5] * 20
    early = [0.95] + [0.95] * 19
    all_ious = [reach_at_20, never, early]
    assert [noc(i, 0.9) for i in all_ious] == [20, 20, 1]
    assert nof(all_ious, 0.9) == 2
    assert mean_noc(all_ious, 0.9) == pytest.approx(41 / 3)


def test_miou_curve_carries_the_last_iou_forward():
    a = [0.2, 0.6, 0.9]  # stopped after 3 clicks
    b = [0.4, 0.4, 0.5, 0.7, 0.8]
    assert list(iou_at_clicks(a, 5)) == pytest.approx([0.2, 0.6, 0.9, 0.9, 0.9])
    curve = miou_curve([a, b], max_clicks=5)
    assert curve == pytest.approx([0.3, 0.5, 0.7, 0.8, 0.85])


def test_summarize_per_dataset_with_spc():
    recs = [
        {"dataset": "A", "instance_id": "a1", "ious": [0.9, 0.95], "method_time": [0.1, 0.3],
         "simulator_time": [0.01, 0.01], "wall_s": 1.0, "max_clicks": 2},
        {"dataset": "A", "instance_id": "a2", "ious": [0.5, 0.86], "method_time": [0.2, 0.2],
         "simulator_time": [0.02, 0.02], "wall_s": 3.0, "max_clicks": 2},
        {"dataset": "B", "instance_id": "b1", "ious": [0.1, 0.2], "max_clicks": 2},
    ]
    s = summarize(recs)
    a = s["A"]
    assert a["instances"] == 2 and a["clicks"] == 4
    assert a["NoC@80"] == pytest.approx(1.5)
    assert a["NoC@85"] == pytest.approx(1.5)
    assert a["NoC@90"] == pytest.approx(1.5)  # a2 never reaches 0.90 within 2 clicks -> 2
    assert a["NoF@90"] == 1 and a["NoF@85"] == 1  # a2 reaches 0.85 exactly at the last click
    assert a["mIoU@k"] == pytest.approx([0.7, 0.905])
    assert a["SPC"] == pytest.approx(4.0 / 4)
    assert a["SPC_method"] == pytest.approx(0.8 / 4)
    assert a["simulator_s_per_click"] == pytest.approx(0.06 / 4)
    assert s["B"]["SPC"] is None and s["B"]["NoF@85"] == 1
    assert list(s) == ["A", "B"]


def test_summarize_rejects_mixed_budgets():
    recs = [{"dataset": "A", "ious": [0.9], "max_clicks": 1}, {"dataset": "A", "ious": [0.9], "max_clicks": 20}]
    with pytest.raises(ValueError, match="max_clicks"):
        summarize(recs)
    assert summarize(recs, max_clicks=20)["A"]["NoC@90"] == 1.0


def test_empty_dataset_metrics_are_nan():
    assert math.isnan(mean_noc([], 0.9))
