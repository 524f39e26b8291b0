"""The one image reader: pixel limit from the header (decompression bombs), lossy masks."""
from __future__ import annotations

import struct
import time
import warnings
import zlib

import cv2
import numpy as np
import pytest

from icmformer.data import imageio
from icmformer.data.imageio import ImageTooLargeError, LossyMaskWarning, decode_image, read_image


def bomb_png(width: int, height: int) -> bytes:
    """A small PNG whose header declares ``width x height`` grey pixels (rows of zeros, compressed)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    comp = zlib.compressobj(9)
    row = b"\x00" * (width + 1)
    body = b"".join(comp.compress(row) for _ in range(64)) + comp.flush()  # only the first rows: header is what matters
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def write(path, arr, ext=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(ext or path.suffix, arr)
    assert ok
    path.write_bytes(buf.tobytes())
    return path


def test_bomb_is_refused_from_the_header(tmp_path, monkeypatch):
    monkeypatch.setenv(imageio.MAX_PIXELS_ENV, "")  # the default limit; restored after the test
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb_png(20000, 20000))
    assert path.stat().st_size < 200_000
    t0 = time.perf_counter()
    with pytest.raises(ImageTooLargeError) as info:
        read_image(path)
    assert time.perf_counter() - t0 < 2.0  # nothing decoded
    msg = str(info.value)
    assert "20000x20000" in msg and str(path) in msg and f"{imageio.DEFAULT_MAX_PIXELS} pixels" in msg
    assert "--max-image-pixels" in msg and imageio.MAX_PIXELS_ENV in msg and "\n" not in msg
    with pytest.raises(ImageTooLargeError):
        decode_image(path.read_bytes(), "upload")


def test_limit_is_configurable(tmp_path, monkeypatch):
    img = np.full((60, 80, 3), 7, np.uint8)
    path = write(tmp_path / "a.png", img)
    monkeypatch.setenv(imageio.MAX_PIXELS_ENV, "4000")
    with pytest.raises(ImageTooLargeError, match="80x60 pixels .* above the limit of 4000 pixels"):
        read_image(path)
    assert read_image(path, max_pixels=4800).shape == (60, 80, 3)  # argument beats the environment
    imageio.set_max_image_pixels(0)  # 0: no limit
    assert read_image(path).shape == (60, 80, 3)
    monkeypatch.setenv(imageio.MAX_PIXELS_ENV, "lots")
    with pytest.raises(ValueError, match=imageio.MAX_PIXELS_ENV):
        read_image(path)
    with pytest.raises(ValueError, match="whole number"):
        imageio.max_image_pixels(-1)


def test_same_pixels_as_opencv(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (33, 47, 3), dtype=np.uint8)
    for ext in (".png", ".jpg", ".bmp"):
        path = write(tmp_path / f"x{ext}", img)
        ref = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(read_image(path), ref)
    gray = write(tmp_path / "g.png", img[..., 0])
    assert read_image(gray).shape == (33, 47, 3)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="cannot decode image"):
        read_image(tmp_path / "bad.png")
    with pytest.raises(FileNotFoundError):
        read_image(tmp_path / "missing.png")


def _jpeg_mask_folder(tmp_path, name="mask.jpg"):
    root = tmp_path / "mine"
    write(root / "img" / "a.png", np.full((64, 64, 3), 120, np.uint8))
    m = np.zeros((64, 64), np.uint8)
    m[10:40, 12:41] = 255
    # a .jpg file, or JPEG bytes behind a .png name: the format is read from the content
    ok, buf = cv2.imencode(".jpg", m, [cv2.IMWRITE_JPEG_QUALITY, 60])
    (root / "gt").mkdir(parents=True, exist_ok=True)
    (root / "gt" / name).write_bytes(buf.tobytes())
    return root, m


@pytest.mark.parametrize("name", ["a.jpg", "a.png"])
def test_jpeg_mask_is_refused_for_evaluation(tmp_path, name):
    from icmformer.data.datasets import get_dataset

    root, m = _jpeg_mask_folder(tmp_path, name)
    ds = get_dataset("folder", root)
    with pytest.raises(ValueError, match=r"mask .*a\.(jpg|png) is stored as JPEG, a lossy format"):
        ds[0]


def test_jpeg_mask_is_binarised_with_a_warning_for_training(tmp_path):
    from icmformer.data.train_datasets import read_instance_mask

    root, m = _jpeg_mask_folder(tmp_path, "a.jpg")
    noisy = cv2.imread(str(root / "gt" / "a.jpg"), cv2.IMREAD_UNCHANGED)
    assert (noisy > 0).sum() > (m > 0).sum()  # what the old reader counted as object
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = read_instance_mask(root / "gt" / "a.jpg")
    assert any(issubclass(w.category, LossyMaskWarning) and "a.jpg" in str(w.message) for w in caught)
    assert abs(int((out == 1).sum()) - int((m > 0).sum())) <= 40 and set(np.unique(out)) <= {0, 1}


def test_predict_cli_refuses_bomb_in_one_line(tmp_path, capsys, monkeypatch):
    from icmformer.cli import main

    monkeypatch.setenv(imageio.MAX_PIXELS_ENV, "")  # the default limit; restored after the test
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb_png(20000, 20000))
    rc = main(["predict", "--model", "icmformer_vit_tiny_224", "--image", str(path), "--click", "5,5,+", "--out", str(tmp_path / "m.png")])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and "--max-image-pixels" in err and "Traceback" not in err
    rc = main(["predict", "--model", "icmformer_vit_tiny_224", "--image", str(path), "--click", "5,5,+",
               "--out", str(tmp_path / "m.png"), "--max-image-pixels", "100"])  # fmt: skip
    assert rc == 1 and "limit of 100 pixels" in capsys.readouterr().err


def test_cocolvis_mask_layer_bomb_is_refused(tmp_path, monkeypatch):
    import pickle

    from icmformer.data.train_datasets import CocoLvisTrainDataset

    monkeypatch.setenv(imageio.MAX_PIXELS_ENV, "")
    split = tmp_path / "train"
    (split / "images").mkdir(parents=True)
    (split / "masks").mkdir()
    write(split / "images" / "000000000001.jpg", np.zeros((64, 64, 3), np.uint8))
    layer = np.frombuffer(bomb_png(20000, 20000), np.uint8)
    (split / "masks" / "000000000001.pickle").write_bytes(pickle.dumps(([layer], [(0, 1)])))
    (split / "hannotation.pickle").write_bytes(pickle.dumps({"000000000001": {"num_instance_masks": 1, "hierarchy": {0: None}}}))
    ds = CocoLvisTrainDataset(tmp_path, epoch_len=1, seed=0)
    with pytest.raises(ImageTooLargeError, match="mask layer of .*000000000001.pickle: 20000x20000"):
        ds.get_layers(0, np.random.default_rng(0))


def test_evaluate_cli_max_image_pixels(tmp_path, capsys, monkeypatch):
    from icmformer.cli import main

    from test_eval_loop import make_folder

    monkeypatch.setenv(imageio.MAX_PIXELS_ENV, "")
    rc = main(["evaluate", "--method", "grabcut", "--datasets", "folder", "--data-root", str(make_folder(tmp_path / "d")),
               "--limit", "1", "--max-clicks", "1", "--quiet", "--out", str(tmp_path / "ev"), "--max-image-pixels", "100"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 1 and "40x30 pixels" in err and "limit of 100 pixels" in err and err.count("\n") == 1
