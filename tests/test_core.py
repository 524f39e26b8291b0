"""The protocol core: the sequential, batched and interactive paths run the same numerics."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import icmformer
from icmformer.evaluation import core as core_mod
from icmformer.evaluation.batched import evaluate_batch
from icmformer.evaluation.core import ClickState, EncodeCache, ModelBackend, TorchBackend, ZoomFlipCore
from icmformer.evaluation.loop import evaluate_items, evaluate_sample
from icmformer.evaluation.predictor import Predictor, make_predict_fn
from icmformer.evaluation.protocol import DEFAULT_PROTOCOL, EvalProtocol
from icmformer.models.registry import tiny_overrides

NAME = "icmformer_vit_base_448"


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return icmformer.create_model(NAME, **tiny_overrides(NAME)).eval()


def _items():
    rng = np.random.default_rng(3)
    image = rng.integers(0, 255, (260, 340, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:260, :340]
    a = ((((yy - 120) / 70) ** 2 + ((xx - 150) / 90) ** 2) <= 1).astype(np.int32)
    b = ((((yy - 60) / 30) ** 2 + ((xx - 260) / 40) ** 2) <= 1).astype(np.int32)
    return image, [(image, a, "a"), (image, b, "b")]


@pytest.fixture
def core_runs(monkeypatch):
    """Counts the calls of the core's three steps, whichever path makes them."""
    counts = {"prepare": 0, "forward": 0, "finish": 0}
    for name in counts:
        original = getattr(ZoomFlipCore, name)

        def wrapped(self, *args, _name=name, _original=original, **kwargs):
            counts[_name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(ZoomFlipCore, name, wrapped)
    return counts


def test_sequential_batched_and_interactive_give_identical_probabilities(model, core_runs):
    image, items = _items()
    per_click = {}
    fn = make_predict_fn(model, image)
    for _, gt, name in items:
        per_click[name] = []
        res = evaluate_sample(gt, fn, max_clicks=4, callback=lambda step, clicks, probs, iou, n=name: per_click[n].append(probs.copy()))
        per_click[name + "_clicks"] = res.clicks
    assert core_runs["forward"] == 8 and core_runs["finish"] == 8  # the sequential path runs the core

    core_runs.update(prepare=0, forward=0, finish=0)
    for k in (1, 2):
        batched = evaluate_batch(model, items, max_clicks=4, batch_size=k)
        for res, (_, _, name) in zip(batched, items):
            assert [c.to_list() for c in res.clicks] == [c.to_list() for c in per_click[name + "_clicks"]]
            assert np.array_equal(res.last_probs, per_click[name][-1]), f"batched K={k} differs on {name}"
    assert core_runs["forward"] == 8 + 4 and core_runs["finish"] == 16  # K=2: one forward per click step

    core_runs.update(prepare=0, forward=0, finish=0)
    predictor = Predictor(model)
    for _, _, name in items:
        predictor.set_image(image)
        for click, expected in zip(per_click[name + "_clicks"], per_click[name]):
            _, prob = predictor.add_click(*click.coords, positive=click.is_positive)
            assert np.array_equal(prob, expected), f"interactive differs on {name}"
    assert core_runs["forward"] == 8


def test_sequential_items_adapter_equals_evaluate_sample(model):
    image, items = _items()
    fn = make_predict_fn(model, image, flip=False)
    direct = [evaluate_sample(gt, fn, max_clicks=3) for _, gt, _ in items]
    built = []
    adapted = list(evaluate_items(items, lambda img: built.append(1) or make_predict_fn(model, img, flip=False), max_clicks=3))
    assert len(built) == 1  # one predict_fn for the two instances of one image
    assert [r.instance_id for r in adapted] == ["a", "b"] and [r.index for r in adapted] == [0, 1]
    for a, d in zip(adapted, direct):
        assert a.ious == d.ious and np.array_equal(a.last_probs, d.last_probs) and a.wall_s > 0


class _RecordingBackend(ModelBackend):
    """A backend that is not a torch model: the core needs only encode and decode."""

    default_input_size = 32

    def __init__(self):
        self.encoded, self.decoded = [], []

    def encode(self, images):
        self.encoded.append(images.shape[0])
        return {"mean": images.mean(dim=(1, 2, 3))}

    def decode(self, state, clicks, prev):
        self.decoded.append(tuple(clicks.shape))
        return state["mean"].view(-1, 1, 1, 1).expand(-1, 1, 16, 16) + prev[:, :, ::2, ::2]

    def cat_states(self, states):
        return states[0] if len(states) == 1 else {"mean": torch.cat([s["mean"] for s in states])}

    def select_state(self, state, items):
        return {"mean": state["mean"][items]}


def test_core_takes_a_custom_backend_and_batches_its_calls():
    backend = _RecordingBackend()
    core = ZoomFlipCore(backend, flip=True)
    assert core.target_size == 32 and core.items_per_step == 2
    rng = np.random.default_rng(0)
    e1, e2 = core.add_image(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)), core.add_image(rng.integers(0, 255, (30, 30, 3), dtype=np.uint8))
    click = icmformer.evaluation.clicker.Click(True, (10, 10), 0)
    steps = [core.prepare(e1, [click], ClickState()), core.prepare(e2, [click], ClickState()), core.prepare(e1, [click], ClickState())]
    out = core.run(steps)
    assert backend.encoded == [4]  # two distinct crops (the third step reuses the first's), flip doubles
    assert backend.decoded == [(6, 1, 3)]  # one decode call for the three steps
    assert out[0][0].shape == (40, 50) and out[1][0].shape == (30, 30)
    assert np.array_equal(out[0][0], out[2][0]) and e1.cache.calls == 1 and e2.cache.calls == 1
    assert out[0][1].roi == (0, 39, 0, 49) and out[0][1].prev_probs.shape == (1, 1, 40, 50)
    with pytest.raises(ValueError, match="cannot move"):
        ZoomFlipCore(backend, device="meta")


def test_encode_cache_is_lru_and_counts():
    cache = EncodeCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "a" is now the most recent
    cache.put("c", 3)
    assert cache.get("b") is None and cache.get("a") == 1 and cache.get("c") == 3
    assert cache.calls == 3 and len(cache) == 2


def test_torch_backend_checks_the_model():
    with pytest.raises(ValueError, match="encode_image"):
        TorchBackend(object())


def test_protocol_defaults_and_davis_rule():
    p = DEFAULT_PROTOCOL
    assert (p.max_clicks, p.pred_thr, p.target_iou, p.zoom_in, p.flip) == (20, 0.49, 0.90, True, True)
    assert p.input_size("DAVIS", 448) == 672 and p.input_size("davis", 224) == 336
    assert p.input_size("GrabCut", 448) == 448 and p.input_size(None, 224) == 224
    q = p.with_(davis_target_size=500, target_size=None, flip=False)
    assert q.input_size("DAVIS", 448) == 500 and q.target_size is None and q.flip is False
    assert q.predictor_options("Berkeley", 224) == {"zoom_in": True, "flip": False, "target_size": 224}
    assert set(p.loop_options()) == {"max_clicks", "pred_thr", "target_iou", "stop_at_target", "min_clicks"}
    with pytest.raises(ValueError, match="max_clicks"):
        EvalProtocol(max_clicks=0)
    with pytest.raises(ValueError, match="davis_target_size"):
        EvalProtocol(davis_target_size=-3)


def test_old_import_paths_still_work():
    from icmformer.evaluation import predictor

    for name in ("get_object_roi", "expand_bbox", "map_clicks", "ZoomFlipPredictor", "Predictor", "PRED_THRESHOLD", "PredictorState", "prepare_model"):
        assert hasattr(predictor, name), name
    assert predictor.PredictorState is core_mod.ClickState
