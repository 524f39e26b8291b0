"""``icmformer predict`` on a tiny checkpoint and a generated image: outputs and error cases."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from icmformer.cli import main
from icmformer.evaluation.predictor import Predictor
from icmformer.interactive import AnnotationSession, demo_image
from icmformer.models.checkpoint import load_checkpoint, save_checkpoint
from icmformer.models.registry import create_model, tiny_overrides

NAME = "icmformer_vit_tiny_224"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("predict")
    torch.manual_seed(0)
    save_checkpoint(create_model(NAME, **tiny_overrides(NAME)), d / "tiny.safetensors")
    Image.fromarray(demo_image(72, 90, seed=2)).save(d / "img.png")
    return d


def reference(ckpt, image_path, clicks, **kw):
    p = Predictor(load_checkpoint(ckpt), **kw)
    p.set_image(np.array(Image.open(image_path).convert("RGB")))
    for y, x, pos in clicks:
        mask, prob = p.add_click(y, x, pos)
    return mask, prob


def run(argv, capsys):
    rc = main(["predict", *map(str, argv)])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_mask_and_probabilities(files, tmp_path, capsys):
    ckpt, img = files / "tiny.safetensors", files / "img.png"
    rc, out, err = run(["--checkpoint", ckpt, "--image", img, "--click", "30,40,+", "--click", "5,80,-",
                        "--out", tmp_path / "sub" / "m.png", "--prob-out", tmp_path / "p.npy"], capsys)  # fmt: skip
    assert rc == 0, err
    assert "2 clicks (1+ 1-)" in out and "ms/click" in out
    mask = np.array(Image.open(tmp_path / "sub" / "m.png"))
    assert mask.shape == (72, 90) and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
    prob = np.load(tmp_path / "p.npy")
    assert prob.dtype == np.float32 and prob.shape == (72, 90) and 0 <= prob.min() and prob.max() <= 1
    ref_mask, ref_prob = reference(ckpt, img, [(30, 40, True), (5, 80, False)])
    np.testing.assert_array_equal(mask == 255, ref_mask)
    np.testing.assert_allclose(prob, ref_prob)
    np.testing.assert_array_equal(mask == 255, prob > 0.49)

    rc, _, err = run(["--checkpoint", ckpt, "--image", img, "--click", "30,40,+", "--no-zoom-in", "--no-flip",
                      "--out", tmp_path / "m2.png", "--prob-out", tmp_path / "p2.png"], capsys)  # fmt: skip
    assert rc == 0, err
    ref_mask, ref_prob = reference(ckpt, img, [(30, 40, True)], zoom_in=False, flip=False)
    np.testing.assert_array_equal(np.array(Image.open(tmp_path / "m2.png")) == 255, ref_mask)
    p8 = np.array(Image.open(tmp_path / "p2.png"))
    assert p8.dtype == np.uint8 and np.abs(p8.astype(int) - np.round(ref_prob * 255)).max() <= 1


def test_clicks_from_an_exported_click_file(files, tmp_path, capsys):
    ckpt, img = files / "tiny.safetensors", files / "img.png"
    s = AnnotationSession.from_model(load_checkpoint(ckpt), np.array(Image.open(img).convert("RGB")), {"name": "img"})
    s.replay([[[30, 40, True]], [[50, 20, True], [10, 10, False]]])
    exported = s.export(tmp_path / "ann")
    rc, _, err = run(["--checkpoint", ckpt, "--image", img, "--clicks", exported.clicks, "--object", "2", "--out", tmp_path / "m.png"], capsys)
    assert rc == 0, err
    np.testing.assert_array_equal(np.array(Image.open(tmp_path / "m.png")), np.array(Image.open(exported.masks[1])))
    (tmp_path / "plain.json").write_text(json.dumps([[30, 40, True]]))
    rc, _, err = run(["--checkpoint", ckpt, "--image", img, "--clicks", tmp_path / "plain.json", "--out", tmp_path / "m3.png"], capsys)
    assert rc == 0, err
    np.testing.assert_array_equal(np.array(Image.open(tmp_path / "m3.png")), np.array(Image.open(exported.masks[0])))
    rc, _, err = run(["--checkpoint", ckpt, "--image", img, "--clicks", exported.clicks, "--object", "3", "--out", tmp_path / "m4.png"], capsys)
    assert rc == 1 and "--object 3" in err and "2 object(s)" in err


def test_untrained_model_is_announced(files, tmp_path, capsys):
    rc, _, err = run(["--model", NAME, "--image", files / "img.png", "--click", "30,40,+", "--out", tmp_path / "m.png"], capsys)
    assert rc == 0 and "UNTRAINED" in err and (tmp_path / "m.png").exists()


def test_never_overwrites_without_force(files, tmp_path, capsys):
    ckpt, img = files / "tiny.safetensors", files / "img.png"
    out = tmp_path / "m.png"
    out.write_bytes(b"keep me")
    rc, _, err = run(["--checkpoint", ckpt, "--image", img, "--click", "30,40,+", "--out", out], capsys)
    assert rc == 1 and "exists" in err and "--force" in err and out.read_bytes() == b"keep me"
    prob = tmp_path / "p.npy"
    prob.write_bytes(b"keep me too")
    rc, _, err = run(["--checkpoint", ckpt, "--image", img, "--click", "30,40,+", "--out", tmp_path / "new.png", "--prob-out", prob], capsys)
    assert rc == 1 and "--prob-out" in err and prob.read_bytes() == b"keep me too" and not (tmp_path / "new.png").exists()
    rc, _, err = run(["--checkpoint", ckpt, "--image", img, "--click", "30,40,+", "--out", out, "--force"], capsys)
    assert rc == 0, err
    assert np.array(Image.open(out)).shape == (72, 90)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--image", "{d}/missing.png", "--click", "1,1,+"], "image file not found: {d}/missing.png"),
        (["--image", "{d}/garbage.jpg", "--click", "1,1,+"], "cannot decode image {d}/garbage.jpg"),
        (["--image", "{d}/img.png", "--click", "72,10,+"], "click (y=72, x=10) lies outside the image of 72x90"),
        (["--image", "{d}/img.png", "--click", "10,-1,+"], "click (y=10, x=-1) lies outside the image"),
        (["--image", "{d}/img.png", "--click", "10,20"], "--click '10,20': expected Y,X,+ or Y,X,-"),
        (["--image", "{d}/img.png", "--click", "10,twenty,+"], "x must be a number"),
        (["--image", "{d}/img.png", "--click", "10,20,maybe"], "expected + or -"),
        (["--image", "{d}/img.png"], "no clicks"),
        (["--image", "{d}/img.png", "--click", "1,1,+", "--clicks", "{d}/c.json"], "not both"),
        (["--image", "{d}/img.png", "--clicks", "{d}/missing.json"], "clicks file not found"),
    ],
)
def test_bad_input_is_a_clear_error(files, tmp_path, capsys, args, message):
    (files / "garbage.jpg").write_bytes(b"this is not a jpeg")
    d = str(files)
    argv = ["--checkpoint", files / "tiny.safetensors", *[a.format(d=d) for a in args], "--out", tmp_path / "m.png"]
    rc, _, err = run(argv, capsys)
    assert rc == 1
    assert message.format(d=d) in err
    assert "Traceback" not in err and not (tmp_path / "m.png").exists()


def test_model_choice_errors(files, tmp_path, capsys):
    base = ["--image", files / "img.png", "--click", "1,1,+", "--out", tmp_path / "m.png"]
    rc, _, err = run(["--pretrained", "--checkpoint", files / "tiny.safetensors", *base], capsys)
    assert rc == 1 and "--pretrained" in err and "--checkpoint" in err and "\n" not in err.strip()
    rc, _, err = run(["--checkpoint", tmp_path / "none.safetensors", *base], capsys)
    assert rc == 1 and "checkpoint not found" in err


def test_entry_point_exit_code(files, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "icmformer.cli", "predict", "--checkpoint", str(files / "tiny.safetensors"),
         "--image", str(files / "img.png"), "--click", "1,1000,+", "--out", str(tmp_path / "m.png")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1 and "outside the image" in proc.stderr
