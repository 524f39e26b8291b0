"""Training datasets: SBD (.mat), COCO+LVIS (RITM pickles), evaluation-style folders."""
from __future__ import annotations

import os
import pickle

import cv2
import numpy as np
import pytest
import torch
from scipy.io import savemat

from icmformer.data.augment import AugmentConfig, build_augmentation
from icmformer.data.points_sampler import MultiPointSampler
from icmformer.data.sample import Sample
from icmformer.data.train_datasets import (
    CocoLvisTrainDataset,
    FolderTrainDataset,
    InstanceLayers,
    SampleTrainDataset,
    SBDTrainDataset,
    build_train_dataset,
    load_restricted_pickle,
)

CROP = 64


def aug(variant="none", crop=CROP, **kw):
    return build_augmentation(AugmentConfig(variant=variant, crop_size=[crop, crop], color_jitter=False, **kw))


def write_image(path, img):
    cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))


def check_item(item, size=CROP, p=24):
    assert set(item) >= {"image", "gt", "clicks", "image_index"}
    assert item["image"].shape == (3, size, size) and item["image"].dtype == torch.float32
    assert 0.0 <= item["image"].min() and item["image"].max() <= 1.0
    assert item["gt"].shape == (1, size, size) and item["gt"].dtype == torch.float32
    assert set(torch.unique(item["gt"]).tolist()) <= {-1.0, 0.0, 1.0}
    assert item["clicks"].shape == (2 * p, 3) and item["clicks"].dtype == torch.float32
    gt = item["gt"][0]
    for row in item["clicks"]:
        y, x, label = int(row[0]), int(row[1]), row[2].item()
        if label == 1:
            assert gt[y, x] == 1
        elif label == 0:
            assert gt[y, x] == 0


# ----------------------------------------------------------------------------- SBD

@pytest.fixture(scope="module")
def sbd_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("SBD") / "dataset"
    (root / "img").mkdir(parents=True)
    (root / "inst").mkdir()
    rng = np.random.default_rng(0)
    names = []
    for k in range(3):
        name = f"2008_00000{k}"
        names.append(name)
        img = rng.integers(0, 255, size=(CROP, CROP, 3), dtype=np.uint8)
        inst = np.zeros((CROP, CROP), np.uint8)
        inst[5:35, 5:35] = 1  # large object (900 px)
        inst[45:52, 45:52] = 2  # small object (49 px)
        inst[60, 0:60] = 3  # a thin line: area/bbox = 1.0, kept by the buggy filter
        inst[0:40, 40] = 4
        inst[10, 40:64] = 4  # an L shape: 64 px in a 40 x 24 bbox -> ratio < 0.08 -> "buggy"
        write_image(root / "img" / f"{name}.jpg", img)
        savemat(root / "inst" / f"{name}.mat", {"GTinst": {"Segmentation": inst, "Boundaries": np.zeros((1, 1)),
                                                          "Categories": np.arange(1, 5)}})
    (root / "train.txt").write_text("\n".join(names) + "\n")
    return root


def test_sbd_items_and_buggy_masks(sbd_root):
    ds = SBDTrainDataset(sbd_root.parent, augmenter=aug(), epoch_len=10, seed=1)  # SBD/ is accepted too
    assert len(ds) == 10 and ds.num_images() == 3
    for i in range(len(ds)):
        check_item(ds[i])
    inst = ds._remove_buggy(0, ds.read_instance_map(0))
    assert set(np.unique(inst).tolist()) == {0, 1, 2, 3}


def test_sbd_min_area_filtering(sbd_root):
    ds = SBDTrainDataset(sbd_root, augmenter=aug(), epoch_len=40, min_object_area=100, seed=0,
                         points_sampler=MultiPointSampler(merge_objects_prob=0.0))
    for i in range(len(ds)):
        gt = ds[i]["gt"][0]
        # the 49-px object and the 60-px line are below 100 px: only the big square is ever a target
        assert gt.sum() == 900 and gt[5:35, 5:35].all()
    ds_small = SBDTrainDataset(sbd_root, augmenter=aug(), epoch_len=40, min_object_area=10, seed=0,
                               points_sampler=MultiPointSampler(merge_objects_prob=0.0))
    areas = {int(ds_small[i]["gt"].sum()) for i in range(len(ds_small))}
    assert areas == {900, 49, 60}


def test_determinism_per_seed_epoch_index(sbd_root):
    kw = dict(augmenter=aug("sbd"), epoch_len=6, seed=5)
    a, b = SBDTrainDataset(sbd_root, **kw), SBDTrainDataset(sbd_root, **kw)
    b.set_epoch(3)
    b[0]  # other items before must not matter
    b.set_epoch(0)
    for i in (4, 1):
        x, y = a[i], b[i]
        for k in ("image", "gt", "clicks"):
            assert torch.equal(x[k], y[k])
    a.set_epoch(1)
    differs = [not torch.equal(a[i]["image"], b[i]["image"]) for i in range(6)]
    assert any(differs), "another epoch gives other samples"
    assert torch.equal(a.get_item(2, 0)["clicks"], b[2]["clicks"])
    other_seed = SBDTrainDataset(sbd_root, augmenter=aug("sbd"), epoch_len=6, seed=6)
    assert any(not torch.equal(other_seed[i]["image"], b[i]["image"]) for i in range(6))


def test_dataloader_collates(sbd_root):
    ds = SBDTrainDataset(sbd_root, augmenter=aug("sbd"), epoch_len=4, seed=0)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4, num_workers=0)))
    assert batch["image"].shape == (4, 3, CROP, CROP) and batch["clicks"].shape == (4, 48, 3)


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="train.txt"):
        SBDTrainDataset(tmp_path)


# ----------------------------------------------------------------------------- COCO+LVIS

@pytest.fixture(scope="module")
def cocolvis_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cocolvis")
    split = root / "train"
    (split / "images").mkdir(parents=True)
    (split / "masks").mkdir()
    rng = np.random.default_rng(1)
    anno = {}
    for image_id in ("000000000001", "000000000002"):
        img = rng.integers(0, 255, size=(CROP, CROP, 3), dtype=np.uint8)
        write_image(split / "images" / f"{image_id}.jpg", img)
        layer0 = np.zeros((CROP, CROP), np.uint8)
        layer0[0:30, 0:30] = 1  # instance 0 (parent), 900 px
        layer0[40:60, 40:60] = 2  # instance 2 (root), 400 px
        layer0[0:64, 62:64] = 3  # stuff region (id 3 in objs_mapping), 128 px
        layer1 = np.zeros((CROP, CROP), np.uint8)
        layer1[5:15, 5:15] = 1  # instance 1, a child of instance 0 (overlaps it: second layer)
        encoded = [cv2.imencode(".png", layer0)[1], cv2.imencode(".png", layer1)[1]]
        objs_mapping = [(0, 1), (1, 1), (0, 2), (0, 3)]
        with open(split / "masks" / f"{image_id}.pickle", "wb") as f:
            pickle.dump((encoded, objs_mapping), f)
        anno[image_id] = {
            "num_instance_masks": 3,
            "hierarchy": {0: {"parent": None, "children": [1], "node_level": 0},
                          1: {"parent": 0, "children": [], "node_level": 1},
                          2: None},
        }
    with open(split / "hannotation.pickle", "wb") as f:
        pickle.dump(anno, f)
    return root


def test_cocolvis_targets_hierarchy_and_stuff(cocolvis_root):
    sampler = MultiPointSampler(merge_objects_prob=0.0)
    ds = CocoLvisTrainDataset(cocolvis_root, augmenter=aug(), epoch_len=30, points_sampler=sampler, seed=0)
    areas = set()
    for i in range(len(ds)):
        item = ds[i]
        check_item(item)
        areas.add(int(item["gt"].sum()))
    assert areas == {900, 400}  # only root instances; the child and the stuff are never targets
    ds_stuff = CocoLvisTrainDataset(cocolvis_root, augmenter=aug(), epoch_len=40, points_sampler=sampler,
                                    stuff_prob=1.0, seed=0)
    assert {int(ds_stuff[i]["gt"].sum()) for i in range(len(ds_stuff))} == {900, 400, 128}
    # min_object_area drops the 400 px instance and the 100 px child
    ds_area = CocoLvisTrainDataset(cocolvis_root, augmenter=aug(), epoch_len=20, points_sampler=sampler,
                                   min_object_area=500, seed=0)
    assert {int(ds_area[i]["gt"].sum()) for i in range(len(ds_area))} == {900}


def test_cocolvis_negatives_on_other_objects_include_children(cocolvis_root):
    sampler = MultiPointSampler(merge_objects_prob=0.0, negative_bg_prob=0.0, negative_other_prob=1.0,
                                negative_border_prob=0.0, prob_gamma=1.0)
    ds = CocoLvisTrainDataset(cocolvis_root, augmenter=aug(), epoch_len=10, points_sampler=sampler, seed=2)
    for i in range(len(ds)):
        item = ds[i]
        neg = item["clicks"][24:]
        neg = neg[neg[:, 2] == 0].long()
        if int(item["gt"].sum()) == 400:  # the target is instance 2: "other" = instance 0 (+ child)
            assert ((neg[:, 0] < 30) & (neg[:, 1] < 30)).all()


def test_restricted_unpickler_refuses_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    p = tmp_path / "evil.pickle"
    p.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(ValueError, match="not allowed"):
        load_restricted_pickle(p)
    ok = tmp_path / "ok.pickle"
    data = {"a": [np.arange(5, dtype=np.uint8), (1, 2.5)], "b": np.float32(3)}
    for proto in (2, 4, 5):
        ok.write_bytes(pickle.dumps(data, protocol=proto))
        back = load_restricted_pickle(ok)
        np.testing.assert_array_equal(back["a"][0], data["a"][0])
        assert back["b"] == 3
    with pytest.raises(FileNotFoundError):
        load_restricted_pickle(tmp_path / "missing.pickle")


# ----------------------------------------------------------------------------- Sample / folder sets

def test_sample_dataset_with_ignore_and_overlap():
    img = np.zeros((CROP, CROP, 3), np.uint8)
    a = np.zeros((CROP, CROP), np.int32)
    a[10:40, 10:40] = 1
    a[5:10, 5:45] = -1  # own ignore band
    b = np.zeros((CROP, CROP), np.int32)
    b[20:50, 20:50] = 1  # overlaps a: goes to a second layer
    layers = InstanceLayers.from_sample(Sample(img, [a, b], "x"))
    assert layers.layers.shape[2] >= 2
    np.testing.assert_array_equal(layers.object_mask(0), a)
    np.testing.assert_array_equal(layers.object_mask(1), b)
    bg = layers.background_mask()
    assert not bg[(a == 1) | (b == 1)].any() and bg[a == -1].all()  # own ignore bands are not "objects"
    ds = SampleTrainDataset([Sample(img, [a], "x")], augmenter=aug("none"), epoch_len=2, seed=0)
    item = ds[0]
    check_item(item)
    np.testing.assert_array_equal(item["gt"][0].numpy(), a)  # crop = image size: nothing changes
    ds = SampleTrainDataset([Sample(img, [a], "x")], augmenter=aug("cocolvis"), epoch_len=8, seed=0)
    with_ignore = 0
    for i in range(len(ds)):
        item = ds[i]
        check_item(item)
        with_ignore += bool((item["gt"] == -1).any())
    assert with_ignore >= 3  # the band survives augmentation (unless cropped away)


def test_padding_as_ignore():
    img = np.zeros((40, 40, 3), np.uint8)
    a = np.zeros((40, 40), np.int32)
    a[10:30, 10:30] = 1
    ds = SampleTrainDataset([Sample(img, [a], "x")], augmenter=aug("none", mask_pad_value=-1), epoch_len=2)
    item = ds[0]
    assert (item["gt"] == -1).sum() == CROP * CROP - 40 * 40
    assert (item["gt"] == 1).sum() == 400


def test_coco_mval_folder(shared_data):
    root = shared_data / "COCO_MVal"
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    ds = FolderTrainDataset(root, augmenter=aug("cocolvis", crop=96), epoch_len=6, seed=0, min_object_area=50)
    assert ds.num_images() == 800
    seen = set()
    for i in range(len(ds)):
        item = ds[i]
        check_item(item, size=96)
        seen.add(item["image_index"])
    assert len(seen) > 1
    assert torch.equal(ds[3]["clicks"], ds.get_item(3, 0)["clicks"])


def test_build_from_config(sbd_root):
    from icmformer.training.config import load_config

    cfg = load_config(None, ["data.kind=sbd", f"data.data_root={sbd_root}", "data.epoch_len=3",
                             "data.augment.crop_size=[48,48]", "data.min_object_area=80"])
    ds = build_train_dataset(cfg.data, cfg.clicks, seed=cfg.seed)
    assert isinstance(ds, SBDTrainDataset) and len(ds) == 3
    check_item(ds[0], size=48)
