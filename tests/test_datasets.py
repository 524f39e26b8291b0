"""Benchmark readers on tiny generated folders, bad inputs, and the real shared sets."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from icmformer.data.datasets import (
    DatasetWarning,
    FolderDataset,
    get_dataset,
    list_datasets,
)

RNG = np.random.default_rng(0)


def rgb(h, w):
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def write_rgb(path, img):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))


def write_gray(path, m):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), m.astype(np.uint8))


def voc_palette():
    pal = np.zeros((256, 3), np.uint8)
    for i in range(256):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = (r, g, b)
    return pal.ravel().tolist()


def write_palette(path, idx):
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(idx.astype(np.uint8), mode="P")
    im.putpalette(voc_palette())
    im.save(path)


# ------------------------------------------------------------------------------ layouts
def test_grabcut_layout_values_spaces_and_mixed_extensions(tmp_path):
    root = tmp_path / "GrabCut"
    sizes = {"a b": (20, 30), "c": (25, 18), "d": (16, 16)}
    exts = {"a b": ".jpg", "c": ".JPG", "d": ".bmp"}
    for stem, (h, w) in sizes.items():
        write_rgb(root / "data_GT" / f"{stem}{exts[stem]}", rgb(h, w))
        m = np.zeros((h, w), np.uint8)
        m[4:10, 4:10] = 255
        m[3, 3:11] = 128
        m[0, 0] = 60  # an unexpected grey value: background, as in RITM
        write_gray(root / "boundary_GT" / f"{stem}.bmp", m)
    ds = get_dataset("GrabCut", tmp_path)
    assert ds.name == "GrabCut" and len(ds) == 3 and ds.num_instances == 3
    s = ds[0]
    assert s.name == "a b" and s.image.shape == (20, 30, 3) and s.image.dtype == np.uint8
    m = s.masks[0]
    assert m.dtype == np.int32 and set(np.unique(m)) == {-1, 0, 1}
    assert (m == 1).sum() == 36 and (m[3, 3:11] == -1).all() and m[0, 0] == 0
    assert [ds[i].name for i in range(3)] == ["a b", "c", "d"]
    assert ds.instance_ids(1) == ["c"] and ds[1].instance_ids == ["c"]


def test_berkeley_any_nonzero_channel_is_object_and_rgb_order(tmp_path):
    root = tmp_path / "Berkeley"
    img = np.zeros((12, 14, 3), np.uint8)
    img[0, 0] = (255, 0, 0)  # red in RGB
    write_rgb(root / "images" / "101087.png", img)
    m = np.zeros((12, 14, 3), np.uint8)
    m[2:6, 2:6] = 255
    m[8, 8] = (255, 0, 255)  # stray pixel (counts as object, as in RITM)
    m[9, 9] = (197, 197, 197)
    (root / "masks").mkdir(parents=True)
    assert cv2.imwrite(str(root / "masks" / "101087.png"), m[..., ::-1])  # RGB -> BGR for OpenCV
    s = get_dataset("Berkeley", tmp_path)[0]
    assert tuple(s.image[0, 0]) == (255, 0, 0)
    assert (s.masks[0] == 1).sum() == 16 + 2


def test_davis_union_of_palette_ids_including_void(tmp_path):
    root = tmp_path / "DAVIS"
    write_rgb(root / "img" / "000.jpg", rgb(10, 12))
    idx = np.zeros((10, 12), np.uint8)
    idx[1:3, 1:3] = 1
    idx[5:7, 5:9] = 2
    idx[9, :] = 255  # void border: object under RITM's rule
    write_palette(root / "gt" / "000.png", idx)
    s = get_dataset("DAVIS", tmp_path)[0]
    assert np.array_equal(s.masks[0], (idx > 0).astype(np.int32))


def test_coco_mval_grayscale_image_becomes_rgb(tmp_path):
    root = tmp_path / "COCO_MVal"
    gray = RNG.integers(0, 256, (9, 11), dtype=np.uint8)
    write_gray(root / "img" / "baseball bat00_000000057232.png", gray)
    m = np.zeros((9, 11), np.uint8)
    m[2:5, 3:7] = 255
    write_gray(root / "gt" / "baseball bat00_000000057232.png", m)
    s = get_dataset("coco_mval", tmp_path)[0]  # names are case-insensitive
    assert s.image.shape == (9, 11, 3) and (s.image[..., 0] == gray).all() and (s.image[..., 2] == gray).all()
    assert (s.masks[0] == 1).sum() == 12 and s.name == "baseball bat00_000000057232"


def test_sbd_one_instance_per_id(tmp_path):
    root = tmp_path / "SBD" / "dataset"
    write_rgb(root / "img" / "2008_000001.jpg", rgb(10, 12))
    write_rgb(root / "img" / "2008_000002.jpg", rgb(8, 8))
    seg = np.zeros((10, 12), np.uint8)
    seg[1:4, 1:4] = 1
    seg[6:9, 6:11] = 3
    (root / "inst").mkdir()
    savemat(root / "inst" / "2008_000001.mat", {"GTinst": {"Segmentation": seg, "Categories": np.array([[15], [7]])}})
    seg2 = np.zeros((8, 8), np.uint8)
    seg2[2:5, 2:5] = 2
    savemat(root / "inst" / "2008_000002.mat", {"GTinst": {"Segmentation": seg2}})
    (root / "val.txt").write_text("2008_000001\n2008_000002\n")
    ds = get_dataset("SBD", tmp_path)
    assert len(ds) == 2 and ds.num_instances == 3
    s = ds[0]
    assert s.instance_ids == ["2008_000001#1", "2008_000001#3"]
    assert np.array_equal(s.masks[1], (seg == 3).astype(np.int32))


def test_pascal_voc_palette_ids_with_ignore_boundary(tmp_path):
    root = tmp_path / "PascalVOC"
    write_rgb(root / "JPEGImages" / "2007_000033.jpg", rgb(10, 12))
    idx = np.zeros((10, 12), np.uint8)
    idx[1:4, 1:4] = 1
    idx[6:9, 6:11] = 2
    idx[4, :] = 255
    write_palette(root / "SegmentationObject" / "2007_000033.png", idx)
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000033\n")
    s = get_dataset("PascalVOC", tmp_path)[0]
    assert s.instance_ids == ["2007_000033#1", "2007_000033#2"]
    for k, m in zip((1, 2), s.masks):
        assert (m == 1).sum() == (idx == k).sum() and (m[4] == -1).all()


def test_folder_rules(tmp_path):
    root = tmp_path / "mine"
    for stem in ("a", "b", "c", "d", "e f"):
        write_rgb(root / "img" / f"{stem}.png", rgb(10, 10))
    m = np.zeros((10, 10), np.uint8)
    m[2:5, 2:5] = 255
    write_gray(root / "gt" / "a.png", m)  # binary 0/255 -> one object
    write_gray(root / "gt" / "b_1.png", m)
    write_gray(root / "gt" / "b_2.bmp", np.roll(m, 4, axis=0))
    ids = np.zeros((10, 10), np.uint8)
    ids[0:2, 0:2] = 1
    ids[6:9, 6:9] = 2
    write_gray(root / "gt" / "c.png", ids)  # small values -> an id map
    pal = ids.copy()
    pal[5, :] = 255
    write_palette(root / "gt" / "d.png", pal)  # palette -> ids, 255 ignore
    write_gray(root / "gt" / "e f.png", m)
    ds = get_dataset("folder", root)
    got = {ds[i].name: ds[i].instance_ids for i in range(len(ds))}
    assert got == {"a": ["a"], "b": ["b_1", "b_2"], "c": ["c#1", "c#2"], "d": ["d#1", "d#2"], "e f": ["e f"]}
    assert ds.num_instances == 8
    d = ds[3]
    assert (d.masks[0][5] == -1).all() and (d.masks[0] == 1).sum() == 4
    binary = FolderDataset(root, mask_mode="binary")
    assert binary[2].instance_ids == ["c"] and (binary[2].masks[0] == 1).sum() == 4 + 9


# ------------------------------------------------------------------------------ bad inputs
def test_missing_root_lists_what_is_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"GrabCut.*data_GT"):
        get_dataset("GrabCut", tmp_path)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        get_dataset("DAVIS", tmp_path / "nowhere")
    (tmp_path / "DAVIS" / "img").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"gt"):
        get_dataset("DAVIS", tmp_path)


def test_corrupt_image_names_the_file(tmp_path):
    root = tmp_path / "DAVIS"
    (root / "img").mkdir(parents=True)
    (root / "img" / "000.jpg").write_bytes(b"this is not a jpeg")
    write_gray(root / "gt" / "000.png", np.full((4, 4), 255))
    ds = get_dataset("DAVIS", tmp_path)
    with pytest.raises(ValueError, match=r"000\.jpg"):
        ds[0]


def test_size_mismatch_names_mask_and_image(tmp_path):
    root = tmp_path / "COCO_MVal"
    write_rgb(root / "img" / "x.jpg", rgb(12, 10))
    write_gray(root / "gt" / "x.png", np.full((10, 10), 255))
    with pytest.raises(ValueError, match=r"gt/x\.png.*x\.jpg"):
        get_dataset("COCO_MVal", tmp_path)[0]


def test_image_without_mask_is_an_error(tmp_path):
    root = tmp_path / "Berkeley"
    write_rgb(root / "images" / "1.jpg", rgb(5, 5))
    write_rgb(root / "images" / "2.jpg", rgb(5, 5))
    write_gray(root / "masks" / "1.png", np.full((5, 5), 255))
    with pytest.raises(FileNotFoundError, match=r"2\.jpg"):
        get_dataset("Berkeley", tmp_path)


def test_mask_without_image_and_stray_files_warn_and_count(tmp_path):
    root = tmp_path / "DAVIS"
    write_rgb(root / "img" / "1.jpg", rgb(5, 5))
    (root / "img" / "notes.txt").write_text("hi")
    write_gray(root / "gt" / "1.png", np.full((5, 5), 255))
    write_gray(root / "gt" / "2.png", np.full((5, 5), 255))
    with pytest.warns(DatasetWarning):
        ds = get_dataset("DAVIS", tmp_path)
    assert len(ds) == 1 and len(ds.warnings) == 2


def test_empty_mask_error_for_folders_warning_for_benchmarks(tmp_path):
    root = tmp_path / "user"
    write_rgb(root / "img" / "x.png", rgb(6, 6))
    write_gray(root / "gt" / "x.png", np.zeros((6, 6)))
    with pytest.raises(ValueError, match=r"x\.png"):
        FolderDataset(root)[0]
    bench = tmp_path / "COCO_MVal"
    write_rgb(bench / "img" / "x.jpg", rgb(6, 6))
    write_gray(bench / "gt" / "x.png", np.zeros((6, 6)))
    ds = get_dataset("COCO_MVal", tmp_path)
    with pytest.warns(DatasetWarning, match="no object"):
        s = ds[0]
    assert s.masks == [] and len(ds.warnings) == 1


def test_folder_mask_matching_no_image_is_an_error(tmp_path):
    root = tmp_path / "user"
    write_rgb(root / "img" / "x.png", rgb(6, 6))
    write_gray(root / "gt" / "x.png", np.full((6, 6), 255))
    write_gray(root / "gt" / "y_1.png", np.full((6, 6), 255))
    with pytest.raises(ValueError, match=r"y_1\.png"):
        FolderDataset(root)


def test_registry():
    assert {"GrabCut", "Berkeley", "DAVIS", "COCO_MVal", "SBD", "PascalVOC", "folder"} <= set(list_datasets())
    with pytest.raises(ValueError, match=r"unknown dataset 'Nope'.*GrabCut.*Berkeley"):
        get_dataset("Nope", ".")


# ------------------------------------------------------------------------------ real sets
@pytest.mark.parametrize("name, n", [("GrabCut", 50), ("Berkeley", 100), ("DAVIS", 345), ("COCO_MVal", 800)])
def test_real_instance_counts(shared_data, name, n):
    ds = get_dataset(name, shared_data)
    assert ds.num_instances == n and ds.warnings == []
    s = ds[len(ds) // 2]
    assert s.image.dtype == np.uint8 and s.image.ndim == 3 and len(s.masks) == 1
    assert set(np.unique(s.masks[0])) <= {-1, 0, 1}


def test_real_grabcut_ignore_band(shared_data):
    ds = get_dataset("GrabCut", shared_data)
    with_band = {ds.image_name(i) for i in range(len(ds)) if (ds.read_mask(i) == -1).any()}
    no_band = {"106024", "153093", "181079", "189080", "208001", "376043", "llama", "teddy"}
    assert len(with_band) == 42 and not (with_band & no_band)
    i = [ds.image_name(k) for k in range(len(ds))].index("llama")
    raw = np.asarray(Image.open(ds.mask_paths[i]))
    assert np.array_equal(ds.read_mask(i), (raw > 128).astype(np.int32))


def test_real_void_and_stray_pixels_count_as_object(shared_data):
    davis = get_dataset("DAVIS", shared_data)
    i = [davis.image_name(k) for k in range(len(davis))].index("195")
    idx = np.asarray(Image.open(davis.mask_paths[i]))
    assert (idx == 255).sum() == 160
    assert (davis.read_mask(i) == 1).sum() == (idx > 0).sum()
    berk = get_dataset("Berkeley", shared_data)
    i = [berk.image_name(k) for k in range(len(berk))].index("101087")
    colours = np.asarray(Image.open(berk.mask_paths[i]).convert("RGB"))
    assert (berk.read_mask(i) == 1).sum() == 25066 + 3 == (colours.max(axis=2) > 0).sum()


def test_real_coco_grayscale_and_spaces(shared_data):
    ds = get_dataset("COCO_MVal", shared_data)
    names = [ds.image_name(k) for k in range(len(ds))]
    s = ds[names.index("skateboard02_000000431848")]
    assert s.image.shape[2] == 3 and (s.image[..., 0] == s.image[..., 1]).all()
    spaced = [k for k, n in enumerate(names) if " " in n]
    assert len(spaced) == 150
    assert ds[spaced[0]].masks[0].any()
