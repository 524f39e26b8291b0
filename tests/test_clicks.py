"""Click encoding: disk radius and channels, padding, validation."""
from __future__ import annotations

import pytest
import torch

from icmformer.models.clicks import clicks_to_tensor, encode_clicks, validate_clicks


def lattice_points_in_disk(r: int) -> int:
    return sum(1 for i in range(-r, r + 1) for j in range(-r, r + 1) if i * i + j * j <= r * r)


def test_disk_radius_and_channels():
    clicks = clicks_to_tensor([[(20, 30, True), (50, 10, False)]])
    maps = encode_clicks(validate_clicks(clicks, (64, 64)), (64, 64), radius=5)
    assert maps.shape == (1, 2, 64, 64)
    pos, neg = maps[0, 0], maps[0, 1]
    assert pos.sum() == lattice_points_in_disk(5) == 81
    assert neg.sum() == 81
    assert pos[20, 30] == 1 and pos[20, 35] == 1 and pos[20, 36] == 0 and pos[24, 33] == 1 and pos[24, 34] == 0
    assert neg[50, 10] == 1 and pos[50, 10] == 0
    assert set(maps.unique().tolist()) == {0.0, 1.0}


def test_fractional_click_coordinates_use_the_integer_grid():
    # (y, x) = (10.5, 10.5): pixels with (i-10.5)^2 + (j-10.5)^2 <= 25
    clicks = torch.tensor([[[10.5, 10.5, 1.0]]])
    maps = encode_clicks(clicks, (32, 32))
    expected = sum(1 for i in range(32) for j in range(32) if (i - 10.5) ** 2 + (j - 10.5) ** 2 <= 25)
    assert maps[0, 0].sum() == expected


def test_padding_rows_are_ignored_and_disks_merge():
    a = clicks_to_tensor([[(10, 10, True), (12, 12, True)], [(40, 40, True)]])
    assert a.shape == (2, 2, 3) and a[1, 1, 2] == -1
    maps = encode_clicks(validate_clicks(a, (64, 64)), (64, 64))
    single = encode_clicks(validate_clicks(clicks_to_tensor([[(40, 40, True)]]), (64, 64)), (64, 64))
    torch.testing.assert_close(maps[1], single[0])
    union = encode_clicks(clicks_to_tensor([[(10, 10, True)]]), (64, 64))[0, 0].bool() | encode_clicks(
        clicks_to_tensor([[(12, 12, True)]]), (64, 64)
    )[0, 0].bool()
    assert torch.equal(maps[0, 0].bool(), union)


def test_radius_is_configurable():
    maps = encode_clicks(clicks_to_tensor([[(20, 20, True)]]), (64, 64), radius=3)
    assert maps[0, 0].sum() == lattice_points_in_disk(3)


def test_clicks_outside_the_image_are_rejected():
    for y, x in [(-1, 5), (5, 64), (64, 0), (10, -0.5)]:
        with pytest.raises(ValueError, match="outside the 64x64"):
            validate_clicks(torch.tensor([[[y, x, 1.0]]]), (64, 64))
    # padding rows may hold any coordinates; the zoom-in path may pass outside clicks
    validate_clicks(torch.tensor([[[-1.0, -1.0, -1.0]]]), (64, 64))
    validate_clicks(torch.tensor([[[70.0, 5.0, 0.0]]]), (64, 64), allow_outside=True)


@pytest.mark.parametrize(
    "bad,match",
    [
        (torch.zeros(1, 3), "B x N x 3"),
        (torch.zeros(1, 2, 2), "B x N x 3"),
        (torch.tensor([[[1.0, 1.0, 2.0]]]), "labels"),
        ([[1, 2, 1]], "torch.Tensor"),
    ],
)
def test_malformed_clicks(bad, match):
    with pytest.raises(ValueError, match=match):
        validate_clicks(bad, (8, 8))


def test_encoding_runs_on_the_click_device():
    clicks = clicks_to_tensor([[(3, 3, True)]], device="meta")
    assert encode_clicks(clicks, (8, 8)).device.type == "meta"
