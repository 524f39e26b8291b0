"""Training augmentation: alignment of image and mask, size, seeding, ignore label."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from icmformer.data.augment import VARIANTS, AugmentConfig, build_augmentation, build_transforms

RED = np.array([255, 0, 0])


def scene(h=120, w=150):
    """A red square on a dark grey background with its mask and an ignore band around it."""
    img = np.full((h, w, 3), 40, np.uint8)
    mask = np.zeros((h, w), np.int32)
    mask[30:80, 50:110] = -1
    mask[35:75, 55:105] = 1
    img[35:75, 55:105] = RED
    return img, mask


def no_jitter(variant: str, crop=(96, 96), **kw) -> AugmentConfig:
    return AugmentConfig(variant=variant, crop_size=list(crop), color_jitter=False, **kw)


@pytest.mark.parametrize("variant", VARIANTS)
def test_image_and_mask_stay_aligned(variant):
    img, mask = scene()
    aug = build_augmentation(no_jitter(variant))
    checked = 0
    for seed in range(12):
        out_img, out_mask, filled = aug.augment(img, mask, seed=seed)
        assert out_img.shape == (96, 96, 3) and out_img.dtype == np.uint8
        assert out_mask.shape == (96, 96) and out_mask.dtype == np.int32
        obj = out_mask == 1
        if obj.sum() < 30:
            continue
        checked += 1
        # inside the object (away from its edge) the image is red; outside the ignore band it is not
        core = cv2.erode(obj.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=2).astype(bool)
        red = (out_img[..., 0] > 200) & (out_img[..., 1] < 60)
        if core.any():
            assert red[core].mean() > 0.98
        assert not red[(out_mask == 0) & ~filled].any()
    assert checked >= 4


@pytest.mark.parametrize("variant", VARIANTS)
def test_same_seed_same_output(variant):
    img, mask = scene()
    aug = build_augmentation(AugmentConfig(variant=variant, crop_size=[64, 80]))
    a = aug.augment(img, mask, seed=11)
    aug.augment(img, mask, seed=3)  # something else in between
    b = aug.augment(img, mask, seed=11)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    outs = [aug(img, mask, seed=s)[0] for s in range(5)]
    assert any(not np.array_equal(outs[0], o) for o in outs[1:])


def test_ignore_label_survives_and_padding_value():
    img, mask = scene(60, 70)  # smaller than the crop: padding is needed
    for pad in (0, -1):
        aug = build_augmentation(no_jitter("cocolvis", crop=(128, 128), mask_pad_value=pad))
        for seed in range(5):
            _, out_mask, filled = aug.augment(img, mask, seed=seed)
            values = set(np.unique(out_mask).tolist())
            assert values <= {-1, 0, 1} and {-1, 1} <= values
            assert filled.any() and (out_mask[filled] == pad).all()
    # multi-channel id masks (RITM-style layers) keep their ids
    layers = np.stack([mask.clip(0), (mask == -1).astype(np.int32) * 7], axis=2)
    out_img, out_layers = build_augmentation(no_jitter("sbd"))(img, layers, seed=1)
    assert out_layers.shape == (96, 96, 2)
    assert set(np.unique(out_layers[..., 1]).tolist()) <= {0, 7}


def test_variant_steps_and_scale_defaults():
    names = lambda cfg: [type(t).__name__ for t in build_transforms(cfg)]  # noqa: E731
    assert names(AugmentConfig("cocolvis")) == [
        "RandomScale", "HorizontalFlip", "PadIfNeeded", "RandomCrop", "RandomBrightnessContrast", "RGBShift"]
    assert names(AugmentConfig("sbd"))[:4] == ["RandomScale", "OneOf", "RandomRotate90", "Affine"]
    assert "Rotate" in names(AugmentConfig("paper"))
    assert AugmentConfig("cocolvis").resolved_scale_range() == (0.75, 1.40)
    assert AugmentConfig("paper").resolved_scale_range() == (0.75, 1.25)
    assert AugmentConfig("cocolvis", scale_range=[0.75, 1.25]).resolved_scale_range() == (0.75, 1.25)
    # the resize follows the configured range: a 100 px square crop of a 100 px image scaled by 2
    img = np.zeros((100, 100, 3), np.uint8)
    m = np.zeros((100, 100), np.int32)
    m[:50] = 1
    aug = build_augmentation(no_jitter("none", crop=(200, 200), scale_range=[2.0, 2.0]))
    _, out, filled = aug.augment(img, m, seed=0)
    assert not filled.any() and (out == 1).sum() == 200 * 100


def test_bad_config_and_input():
    with pytest.raises(ValueError, match="variant"):
        build_augmentation(AugmentConfig(variant="fancy"))
    with pytest.raises(ValueError, match="crop_size"):
        build_augmentation(AugmentConfig(crop_size=[10]))
    aug = build_augmentation(AugmentConfig(crop_size=[32, 32]))
    with pytest.raises(ValueError, match="mask"):
        aug(np.zeros((10, 10, 3), np.uint8), np.zeros((11, 10), np.int32))
    with pytest.raises(ValueError, match="-1"):
        aug(np.zeros((10, 10, 3), np.uint8), np.full((10, 10), -2, np.int32))


def test_object_centred_crop_frames_the_object():
    img, mask = scene(240, 320)
    mask[mask == -1] = 0
    obj_side = 50  # the object's box is 40 x 50
    aug = build_augmentation(no_jitter("cocolvis", object_crop_prob=1.0, object_crop_expand=[1.25, 1.25]))
    for seed in range(8):
        out_img, out_mask, filled = aug.augment(img, mask, seed=seed)
        assert out_img.shape == (96, 96, 3)
        obj = out_mask == 1
        # the box is 1.25 x the longer side: the object's width spans 1/1.25 of the crop
        cols = np.nonzero(obj.any(0))[0]
        assert abs((cols[-1] - cols[0] + 1) - 96 / 1.25) <= 2, seed
        red = (out_img[..., 0] > 200) & (out_img[..., 1] < 60)
        assert (red == obj).mean() > 0.97  # image and mask stay aligned
    # near the image border the box leaves the image: those pixels are reported as filled
    img2, mask2 = scene(120, 150)
    mask2[:] = 0
    mask2[0:20, 0:20] = 1
    _, m2, f2 = build_augmentation(no_jitter("cocolvis", object_crop_prob=1.0, object_crop_expand=[3, 3])).augment(img2, mask2, seed=0)
    assert f2.any() and (m2[f2] == 0).all()


def test_object_crop_probability_zero_is_the_official_pipeline():
    img, mask = scene()
    a = build_augmentation(AugmentConfig(crop_size=[64, 64])).augment(img, mask, seed=5)
    b = build_augmentation(AugmentConfig(crop_size=[64, 64], object_crop_prob=0.0)).augment(img, mask, seed=5)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    with pytest.raises(ValueError, match="object_crop_prob"):
        AugmentConfig(object_crop_prob=1.5).validate()
    with pytest.raises(ValueError, match="object_crop_expand"):
        AugmentConfig(object_crop_expand=[0.5, 2]).validate()


def test_whole_image_framing_squashes_the_full_image():
    img, mask = scene(240, 320)
    mask[mask == -1] = 0
    aug = build_augmentation(no_jitter("cocolvis", whole_image_prob=1.0))
    for seed in range(4):
        out_img, out_mask, filled = aug.augment(img, mask, seed=seed)
        assert out_img.shape == (96, 96, 3) and not filled.any()  # nothing is padded
        # the whole image, aspect not kept: the object keeps its relative place and size
        # (up to the horizontal flip), here 40/240 of the height and 50/320 of the width
        obj = out_mask == 1
        rows, cols = np.nonzero(obj.any(1))[0], np.nonzero(obj.any(0))[0]
        assert abs((rows[-1] - rows[0] + 1) - 96 * 40 / 240) <= 2, seed
        assert abs((cols[-1] - cols[0] + 1) - 96 * 50 / 320) <= 2, seed
        red = (out_img[..., 0] > 200) & (out_img[..., 1] < 60)
        assert (red == obj).mean() > 0.97


def test_one_draw_picks_the_framing_and_old_configs_draw_as_before():
    img, mask = scene(240, 320)
    mask[mask == -1] = 0
    base = no_jitter("cocolvis", object_crop_prob=0.5)
    with_whole = no_jitter("cocolvis", object_crop_prob=0.5, whole_image_prob=0.0)
    split = no_jitter("cocolvis", object_crop_prob=0.5, whole_image_prob=0.5)
    a, b, c = build_augmentation(base), build_augmentation(with_whole), build_augmentation(split)
    whole = build_augmentation(no_jitter("cocolvis", whole_image_prob=1.0))
    kinds = set()
    for seed in range(12):
        ra, rb, rc = a.augment(img, mask, seed=seed), b.augment(img, mask, seed=seed), c.augment(img, mask, seed=seed)
        for x, y in zip(ra, rb):
            np.testing.assert_array_equal(x, y)
        # where the old config made an object crop, the split config makes the same one;
        # elsewhere it shows the whole image
        if not np.array_equal(ra[0], rc[0]):
            np.testing.assert_array_equal(rc[0], whole.augment(img, mask, seed=seed)[0])
            kinds.add("whole")
        else:
            kinds.add("object")
    assert kinds == {"whole", "object"}
    with pytest.raises(ValueError, match="whole_image_prob"):
        AugmentConfig(whole_image_prob=-0.1).validate()
    with pytest.raises(ValueError, match="must not exceed 1"):
        AugmentConfig(object_crop_prob=0.7, whole_image_prob=0.4).validate()
