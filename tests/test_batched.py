"""Batched evaluation (several instances per forward pass) against the sequential path."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import icmformer
from icmformer.cli import main
from icmformer.evaluation.batched import ModelMethod, evaluate_batch, iter_evaluate_batch
from icmformer.evaluation.loop import evaluate_sample
from icmformer.evaluation.predictor import make_predict_fn
from icmformer.evaluation.runner import RECORDS, read_records, run_evaluation
from icmformer.models.clicks import encode_clicks
from icmformer.models.icmformer import ImageState
from icmformer.models.registry import tiny_overrides

NAME = "icmformer_vit_base_448"


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny 64 x 64 models gain nothing from a second thread, and two threads on a busy 2-core
    # machine are 10-30x slower; sequential and batched runs of a test share the setting.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_model(seed: int = 0):
    torch.manual_seed(seed)
    return icmformer.create_model(NAME, **tiny_overrides(NAME)).eval()


class ClickBoost(torch.nn.Module):
    """The tiny real model (every call really runs it, batched) plus a click- and prev-mask-driven
    term, so that its untrained predictions follow the clicks: the zoom-in ROI moves, the encode
    cache is hit and missed, and some instances reach the target IoU early."""

    def __init__(self, model, radius=8.0, gain=6.0):
        super().__init__()
        self.model = model
        self.radius = radius
        self.gain = gain
        self.default_input_size = model.default_input_size
        self.encode_batches = []
        self.predict_batches = []

    def encode_image(self, image):
        self.encode_batches.append(image.shape[0])
        return self.model.encode_image(image)

    def predict_clicks(self, state, clicks, prev_mask=None, allow_outside_clicks=False):
        self.predict_batches.append((clicks.shape[0], clicks.shape[1], int((clicks[..., 2] == -1).sum())))
        logits = self.model.predict_clicks(state, clicks, prev_mask, allow_outside_clicks=allow_outside_clicks)
        disks = encode_clicks(clicks.float(), state.image_size, self.radius)
        return logits + self.gain * (disks[:, :1] - disks[:, 1:2]) + self.gain * (prev_mask - 0.5)


def ellipse(h, w, cy, cx, ry, rx):
    yy, xx = np.mgrid[:h, :w]
    return ((((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2) <= 1).astype(np.int32)


def make_items():
    """Six instances on three images of different sizes (two images with two instances each)."""
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (300, 420, 3), dtype=np.uint8)
    b = rng.integers(0, 255, (250, 230, 3), dtype=np.uint8)
    c = rng.integers(0, 255, (520, 390, 3), dtype=np.uint8)
    c_mask = ellipse(520, 390, 300, 150, 50, 40)
    c_mask[:20] = -1  # an ignore band
    return [
        (a, ellipse(300, 420, 120, 200, 60, 90), "a0"),
        (a, ellipse(300, 420, 150, 210, 37, 52), "a1"),  # about one click disk: done after a click or two
        (b, ellipse(250, 230, 100, 100, 80, 60), "b0"),
        (c, c_mask, "c0"),
        (c, ellipse(520, 390, 100, 300, 20, 20), "c1"),
        (a, ellipse(300, 420, 240, 330, 25, 30), "a2"),
    ]


def sequential(model, items, max_clicks, **kw):
    opts = {k: kw.pop(k) for k in ("zoom_in", "flip")}
    fns, out = {}, []
    for image, mask, _ in items:
        fn = fns.setdefault(id(image), make_predict_fn(model, image, **opts))
        out.append(evaluate_sample(mask, fn, max_clicks=max_clicks, **kw))
    return out


def assert_same(seq, res):
    assert len(seq) == len(res)
    for s, r in zip(seq, res):
        assert [c.to_list() for c in r.clicks] == [c.to_list() for c in s.clicks]
        assert len(r.ious) == len(s.ious) == len(r.method_times) == len(r.simulator_times)
        np.testing.assert_allclose(r.ious, s.ious, rtol=0, atol=1e-6)
        np.testing.assert_allclose(r.last_probs, s.last_probs, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "zoom_in,flip,stop", [(True, True, False), (False, False, False), (True, True, True), (True, False, True)]
)
def test_batched_equals_sequential(zoom_in, flip, stop):
    model = ClickBoost(tiny_model())
    items = make_items()
    protocol = dict(stop_at_target=True, target_iou=0.8) if stop else {}
    seq = sequential(model, items, 6, zoom_in=zoom_in, flip=flip, **protocol)
    n_seq_encodes = len(model.encode_batches)
    if stop:
        assert len({len(s.ious) for s in seq}) > 1  # instances finish at different clicks
    for k in (1, 2, 3):
        model.encode_batches.clear()
        model.predict_batches.clear()
        res = evaluate_batch(model, items, max_clicks=6, batch_size=k, zoom_in=zoom_in, flip=flip, **protocol)
        assert [r.instance_id for r in res] == [it[2] for it in items]
        assert_same(seq, res)
        per = 2 if flip else 1
        assert max(b for b, _, _ in model.predict_batches) == per * k
        assert sum(b for b, _, _ in model.predict_batches) == per * sum(len(s.ious) for s in seq)
        # The cache is shared by the instances of an image, as the sequential per-image predictor's;
        # "a2" comes back to image "a" after its slot was released: at most one extra crop.
        n_crops = sum(model.encode_batches) // per
        assert n_crops <= n_seq_encodes + 1
        if k == 3:
            assert len(model.encode_batches) < n_crops  # crops of several instances in one encode call
        for r in res:
            assert all(1 <= n <= k for n in r.batch_sizes) and r.wall_s > 0
            assert all(t > 0 for t in r.method_times) and all(t > 0 for t in r.simulator_times)
        if stop and k > 1:
            # the queue refilled mid-run: one batch held click lists of different lengths (padded)
            assert any(pad > 0 for _, _, pad in model.predict_batches)
            assert any(len(set(r.batch_sizes)) > 1 or r.batch_sizes[0] < k for r in res)


def test_iterator_is_lazy_and_checks_input():
    model = tiny_model()
    items = make_items()[:3]
    pulled = []

    def gen():
        for it in items:
            pulled.append(it[2])
            yield it

    it = iter_evaluate_batch(model, gen(), max_clicks=2, batch_size=2, flip=False)
    first = next(it)
    assert first.instance_id == "a0" and pulled == ["a0", "a1"]
    assert [r.instance_id for r in it] == ["a1", "b0"]
    with pytest.raises(ValueError, match="batch_size"):
        evaluate_batch(model, items, batch_size=0)
    image = items[0][0]
    with pytest.raises(ValueError, match="bad"):
        evaluate_batch(model, [(image, np.zeros((5, 5), np.int32), "bad")], max_clicks=1)
    with pytest.raises(ValueError, match="uint8"):
        evaluate_batch(model, [(image.astype(np.float32), items[0][1], "f")], max_clicks=1)


def test_image_state_cat_select():
    model = tiny_model()
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        st = model.encode_image(x)
    parts = [st.select(0), st.select([1]), st.select(slice(2, 3))]
    assert [p.batch_size for p in parts] == [1, 1, 1]
    back = ImageState.cat(parts)
    assert torch.equal(back.features, st.features) and back.grid == st.grid and back.image_size == st.image_size
    assert back.embedding is None
    assert torch.equal(ImageState.cat([st.select(torch.tensor([2, 0])), st.select(-2)]).features, st.features[[2, 0, 1]])
    # Swin-like states carry an embedding
    sw = ImageState(torch.rand(4, 2, 2, 8), (64, 64), embedding=torch.rand(4, 16, 16, 4))
    sw2 = ImageState.cat([sw.select([3, 1]), sw.select(slice(0, 1))])
    assert torch.equal(sw2.embedding, sw.embedding[[3, 1, 0]]) and torch.equal(sw2.features, sw.features[[3, 1, 0]])
    with pytest.raises(ValueError, match="image_size"):
        ImageState.cat([st, ImageState(st.features, (32, 32), grid=st.grid)])
    with pytest.raises(ValueError, match="grid"):
        ImageState.cat([st, ImageState(st.features, st.image_size, grid=(2, 8))])
    with pytest.raises(ValueError, match="embedding"):
        ImageState.cat([sw, ImageState(sw.features, sw.image_size)])
    with pytest.raises(ValueError):
        ImageState.cat([])
    with pytest.raises(IndexError):
        st.select(3)


def _cli(shared_data, out, ckpt, *extra):
    return main(["evaluate", "--checkpoint", str(ckpt), "--datasets", "GrabCut", "--data-root", str(shared_data),
                 "--out", str(out), "--limit", "2", "--max-clicks", "4", "--quiet", "--device", "cpu", *extra])


def strip(records):
    keep = ("dataset", "instance_id", "image", "n_clicks", "clicks")
    return [{k: r[k] for k in keep} for r in records]


def test_cli_batch_size_2_matches_batch_size_1(shared_data, tmp_path):
    ckpt = icmformer.save_checkpoint(tiny_model(), tmp_path / "tiny.safetensors")
    assert _cli(shared_data, tmp_path / "b1", ckpt) == 0
    assert _cli(shared_data, tmp_path / "b2", ckpt, "--batch-size", "2") == 0
    r1, r2 = read_records(tmp_path / "b1" / RECORDS), read_records(tmp_path / "b2" / RECORDS)
    assert strip(r1) == strip(r2) and len(r2) == 2
    for a, b in zip(r1, r2):
        np.testing.assert_allclose(a["ious"], b["ious"], rtol=0, atol=1e-6)
    assert all(r["batch_size"] == 2 for r in r2) and all("batch_size" not in r for r in r1)
    s1 = json.loads((tmp_path / "b1" / "summary.json").read_text())
    s2 = json.loads((tmp_path / "b2" / "summary.json").read_text())
    for key in ("NoC@80", "NoC@85", "NoC@90", "NoF@90", "instances", "clicks"):
        assert s1["datasets"]["GrabCut"][key] == s2["datasets"]["GrabCut"][key]
    assert "batch_size" not in s1["config"] and s2["config"]["batch_size"] == 2
    g2 = s2["datasets"]["GrabCut"]
    assert g2["SPC"] >= g2["SPC_method"] > 0
    assert _cli(shared_data, tmp_path / "gc", ckpt, "--method", "grabcut", "--batch-size", "2") == 1


class Crash(Exception):
    pass


class Crashing(torch.nn.Module):
    """Forwards to a model; raises at the ``fail_at``-th predict call."""

    def __init__(self, model, fail_at=None):
        super().__init__()
        self.model = model
        self.default_input_size = model.default_input_size
        self.fail_at = fail_at
        self.calls = 0

    def encode_image(self, image):
        return self.model.encode_image(image)

    def predict_clicks(self, state, clicks, prev_mask=None, allow_outside_clicks=False):
        self.calls += 1
        if self.fail_at is not None and self.calls >= self.fail_at:
            raise Crash("simulated crash")
        return self.model.predict_clicks(state, clicks, prev_mask, allow_outside_clicks=allow_outside_clicks)


def test_interrupted_batched_run_resumes(shared_data, tmp_path):
    model = tiny_model()

    def run(out, fail_at=None, batch_size=2):
        wrapped = Crashing(model, fail_at)
        method = ModelMethod(wrapped, device="cpu")
        run_evaluation(["GrabCut"], shared_data, method, out, max_clicks=3, progress=False, limit=5,
                       config={"method": "tiny"}, batch_size=batch_size)
        return wrapped

    run(tmp_path / "full")
    full = read_records(tmp_path / "full" / RECORDS)
    assert len(full) == 5 and [r["instance_id"] for r in full] == sorted(r["instance_id"] for r in full)
    with pytest.raises(Crash):
        run(tmp_path / "cut", fail_at=8)  # two pairs x 3 clicks done; the last instance crashes at its 2nd click
    assert len(read_records(tmp_path / "cut" / RECORDS)) == 4
    resumed = run(tmp_path / "cut", batch_size=3)  # another batch size may resume
    assert resumed.calls == 3  # only the last instance ran again
    cut = read_records(tmp_path / "cut" / RECORDS)
    assert strip(cut) == strip(full)
    for a, b in zip(cut, full):
        np.testing.assert_allclose(a["ious"], b["ious"], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="batched method"):
        run_evaluation(["GrabCut"], shared_data, lambda s: None, tmp_path / "x", max_clicks=1, progress=False, batch_size=2)
