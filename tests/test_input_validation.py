"""Bad input from people and programs: clicks, empty images (issue 14)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from icmformer.evaluation.click_input import validate_click
from icmformer.evaluation.predictor import Predictor
from icmformer.interactive.io import parse_click

from test_predictor import FakeModel


@pytest.fixture()
def predictor():
    p = Predictor(FakeModel(size=32, r=3), zoom_in=False)
    p.set_image(np.zeros((64, 48, 3), np.uint8))
    return p


@pytest.mark.parametrize("label", ["no", "yes", "", None, 2, -1, 0.5, 1.0, [1]])
def test_add_click_accepts_only_bool_or_0_1_labels(predictor, label):
    with pytest.raises(ValueError, match="positive must be True/False"):
        predictor.add_click(10, 10, label)
    assert predictor.clicks == []


@pytest.mark.parametrize("label,expected", [(True, True), (False, False), (1, True), (0, False), (np.bool_(False), False), (np.int64(1), True)])
def test_add_click_labels(predictor, label, expected):
    predictor.add_click(10, 10, label)
    assert predictor.clicks[-1].is_positive is expected


@pytest.mark.parametrize("y", [math.inf, -math.inf, math.nan, "5", None, True, [5], 1e30])
def test_add_click_refuses_non_finite_and_non_numeric_coordinates(predictor, y):
    with pytest.raises(ValueError, match="y"):
        predictor.add_click(y, 10)
    assert predictor.clicks == []


def test_fractional_coordinates_are_the_same_pixel_in_api_and_cli(predictor):
    predictor.add_click(20.9, 30.2, True)
    predictor.add_click(np.float32(10.5), 5.49, False)
    assert [c.coords for c in predictor.clicks] == [(21, 30), (11, 5)]
    assert parse_click("20.9,30.2,+").coords == (21, 30)
    assert parse_click([10.5, 5.49, 0]).coords == (11, 5)
    assert validate_click(63.4, 47.49, 1, (64, 48))[:2] == (63, 47)
    with pytest.raises(ValueError, match="outside the image"):
        predictor.add_click(63.5, 10)  # the nearest pixel is row 64: outside
    with pytest.raises(ValueError, match="finite"):
        parse_click("inf,3,+")
    with pytest.raises(ValueError, match="number"):
        parse_click("abc,3,+")


@pytest.mark.parametrize("shape", [(0, 0, 3), (0, 5, 3), (5, 0, 3)])
def test_set_image_rejects_empty_arrays(shape):
    p = Predictor(FakeModel(size=32, r=3), zoom_in=False)
    with pytest.raises(ValueError, match="empty"):
        p.set_image(np.zeros(shape, np.uint8))
