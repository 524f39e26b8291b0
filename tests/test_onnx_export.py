"""ONNX export (encoder.onnx / decoder.onnx + JSON) and the onnxruntime backend of the protocol core."""
from __future__ import annotations

import json
import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from icmformer.cli import main as cli  # noqa: E402
from icmformer.deploy.onnx_backend import OnnxBackend, OnnxState, read_export_metadata  # noqa: E402
from icmformer.deploy.onnx_export import PARITY_TOLERANCE, example_inputs, export_onnx  # noqa: E402
from icmformer.evaluation.predictor import Predictor  # noqa: E402
from icmformer.models.factory import DEFAULT_PRETRAINED_MODEL  # noqa: E402
from icmformer.models.registry import create_model, tiny_overrides  # noqa: E402

DEMO = DEFAULT_PRETRAINED_MODEL  # the shipped demo model


def tiny(name="icmformer_vit_base_448", seed=0):
    torch.manual_seed(seed)
    return create_model(name, **tiny_overrides(name)).eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = tiny()
    out = tmp_path_factory.mktemp("onnx") / "vit"
    meta = export_onnx(model, out)
    return model, out, meta


def max_logit_diff(model, backend, batch, clicks, seed):
    images, pts, prev = example_inputs(backend.default_input_size, batch=batch, clicks=clicks, seed=seed)
    with torch.inference_mode():
        ref = model.predict_clicks(model.encode_image(images), pts, prev, allow_outside_clicks=True)
    got = backend.decode(backend.encode(images), pts, prev)
    assert got.shape == ref.shape == (batch, 1, backend.default_input_size, backend.default_input_size)
    return float((got - ref).abs().max())


def test_export_writes_two_graphs_and_documented_metadata(exported):
    model, out, meta = exported
    import onnx

    assert (out / "encoder.onnx").is_file() and (out / "decoder.onnx").is_file()
    assert read_export_metadata(out) == meta
    assert meta["model"] == "icmformer_vit_base_448" and meta["input_size"] == 64 and meta["opset"] == 18
    assert meta["normalisation"]["mean"] == [0.485, 0.456, 0.406]
    assert meta["clicks"]["labels"] == {"1": "positive", "0": "negative", "-1": "padding"}
    assert meta["state"]["tensors"] == ["features"] and meta["state"]["static"]["grid"] == [4, 4]
    enc = onnx.load(str(out / "encoder.onnx"))
    dec = onnx.load(str(out / "decoder.onnx"))
    assert [i.name for i in enc.graph.input] == ["image"]
    assert [o.name for o in enc.graph.output] == ["features"]
    assert [i.name for i in dec.graph.input] == ["features", "clicks", "prev_mask"]
    assert [o.name for o in dec.graph.output] == ["logits"]
    # batch (and the number of clicks) are symbolic dimensions
    assert enc.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    assert dec.graph.input[1].type.tensor_type.shape.dim[1].dim_param
    assert meta["parity"]["max_abs_logit_diff"] <= PARITY_TOLERANCE


@pytest.mark.parametrize("batch,clicks", [(1, 1), (4, 7)])
def test_parity_with_pytorch_at_other_batch_sizes_and_click_counts(exported, batch, clicks):
    model, out, _ = exported
    assert max_logit_diff(model, OnnxBackend(out, threads=1), batch, clicks, seed=5) <= PARITY_TOLERANCE


def test_state_carries_every_tensor_field_of_the_demo_model(tmp_path):
    # the demo model's conv stem adds a `skip` tensor to the image state: the graphs carry it
    model = tiny("icmformer_vit_demo_224")
    meta = export_onnx(model, tmp_path)
    assert meta["state"]["tensors"] == ["features", "skip"]
    backend = OnnxBackend(tmp_path, threads=1)
    assert [o.name for o in backend.encoder.get_outputs()] == ["features", "skip"]
    assert max_logit_diff(model, backend, 2, 3, seed=2) <= PARITY_TOLERANCE


def test_onnx_state_batches_like_image_state(exported):
    _, out, _ = exported
    backend = OnnxBackend(out, threads=1)
    a = backend.encode(torch.rand(2, 3, 64, 64))
    b = backend.encode(torch.rand(1, 3, 64, 64))
    both = backend.cat_states([a, b])
    assert both.batch_size == 3
    assert torch.equal(backend.select_state(both, slice(2, 3)).tensors["features"], b.tensors["features"])
    assert isinstance(both, OnnxState)


def test_predictor_on_the_onnx_backend_equals_the_pytorch_predictor(exported):
    """The zoom-in + flip protocol runs through the shared core with either backend."""
    model, out, _ = exported
    rng = np.random.default_rng(0)
    image = (rng.random((90, 120, 3)) * 255).astype(np.uint8)
    clicks = [(45, 60, True), (10, 100, False), (70, 20, True), (50, 65, False)]
    torch_p, onnx_p = Predictor(model), Predictor(OnnxBackend(out, threads=1))
    for p in (torch_p, onnx_p):
        p.set_image(image)
    for y, x, pos in clicks:
        (_, prob_t), (_, prob_o) = torch_p.add_click(y, x, pos), onnx_p.add_click(y, x, pos)
        assert np.abs(prob_t - prob_o).max() < 1e-5
    assert onnx_p.encode_count == torch_p.encode_count >= 1


def test_backend_refuses_bad_input(exported, tmp_path):
    _, out, _ = exported
    backend = OnnxBackend(out, threads=1)
    with pytest.raises(ValueError, match="B x 3 x 64 x 64"):
        backend.encode(torch.rand(1, 3, 32, 32))
    state = backend.encode(torch.rand(1, 3, 64, 64))
    with pytest.raises(ValueError, match="labels"):
        backend.decode(state, torch.tensor([[[1.0, 1.0, 2.0]]]), torch.zeros(1, 1, 64, 64))
    with pytest.raises(FileNotFoundError, match="icmformer_onnx.json"):
        OnnxBackend(tmp_path)
    (tmp_path / "icmformer_onnx.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match="not an icmformer ONNX export"):
        OnnxBackend(tmp_path)


@pytest.fixture(scope="module")
def cli_export(tmp_path_factory):
    """``icmformer export-onnx --checkpoint`` of a tiny model: (checkpoint, folder, stdout)."""
    import contextlib
    import io

    from icmformer.models.checkpoint import save_checkpoint

    tmp = tmp_path_factory.mktemp("cli_export")
    ckpt = save_checkpoint(tiny(seed=4), tmp / "m.safetensors")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert cli(["export-onnx", "--checkpoint", str(ckpt), "--out", str(tmp / "exp")]) == 0
    return ckpt, tmp / "exp", printed.getvalue()


def test_export_cli(cli_export, tmp_path, capsys):
    ckpt, out, printed = cli_export
    assert "parity vs PyTorch" in printed and "icmformer_vit_base_448 @ 64x64" in printed
    meta = json.loads((out / "icmformer_onnx.json").read_text())
    assert meta["source"] == {"checkpoint": str(ckpt), "pretrained": False, "trained": True} and meta["input_size"] == 64
    args = ["export-onnx", "--checkpoint", str(ckpt), "--out", str(out)]
    # an existing export is kept unless --force; bad arguments are one line and exit 1
    assert cli(args) == 1
    assert "--force" in capsys.readouterr().err
    assert cli(["export-onnx", "--out", str(tmp_path / "x")]) == 1
    assert "--checkpoint" in capsys.readouterr().err
    assert cli(["export-onnx", "--model", "icmformer_vit_tiny_224", "--out", str(tmp_path / "y"), "--opset", "3"]) == 1
    assert "opset" in capsys.readouterr().err


@pytest.mark.slow
def test_parity_on_random_weight_vit_b_448(tmp_path):
    torch.manual_seed(0)
    model = create_model("icmformer_vit_base_448").eval()
    meta = export_onnx(model, tmp_path)
    print(f"\nViT-B@448 random weights: max |logit diff| {meta['parity']['max_abs_logit_diff']:.2e} "
          f"(logit scale {meta['parity']['logit_scale']:.2f}), state {meta['parity']['max_abs_state_diff']:.2e}")
    assert meta["parity"]["max_abs_logit_diff"] <= PARITY_TOLERANCE


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    from icmformer.models.factory import shipped_weights, weights_dir

    if shipped_weights(DEMO) is None:
        pytest.skip(f"the shipped demo weights {DEMO}.safetensors are not in {weights_dir()} (not shipped yet)")
    model = create_model(DEMO, pretrained=True).eval()
    out = tmp_path_factory.mktemp("shipped")
    return model, out, export_onnx(model, out)


def test_parity_on_the_shipped_demo_model(shipped):
    model, out, meta = shipped
    print(f"\nshipped demo model: max |logit diff| {meta['parity']['max_abs_logit_diff']:.2e} "
          f"(logit scale {meta['parity']['logit_scale']:.2f})")
    assert meta["parity"]["max_abs_logit_diff"] <= PARITY_TOLERANCE
    assert max_logit_diff(model, OnnxBackend(out, threads=1), 3, 5, seed=9) <= PARITY_TOLERANCE


def test_shipped_model_gives_identical_masks_on_a_grabcut_instance(shipped, shared_data):
    from icmformer.data.datasets import get_dataset
    from icmformer.evaluation.loop import evaluate_sample
    from icmformer.evaluation.predictor import make_predict_fn

    model, out, _ = shipped
    sample = get_dataset("GrabCut", shared_data)[0]
    masks = {}
    for name, m in (("torch", model), ("onnx", OnnxBackend(out, threads=1))):
        seen = []
        fn = make_predict_fn(m, sample.image)

        def record(clicks, fn=fn, seen=seen):
            prob = fn(clicks)
            seen.append(prob)
            return prob

        res = evaluate_sample(sample.masks[0], record, max_clicks=5)
        masks[name] = (seen, [tuple(c.coords) for c in res.clicks])
    assert masks["torch"][1] == masks["onnx"][1]  # the same simulated clicks ...
    for a, b in zip(masks["torch"][0], masks["onnx"][0]):
        # ... and the same mask after every click, except pixels whose probability sits on the 0.49
        # threshold within the export's float tolerance (a logit diff d moves a probability by <= d/4)
        differ = (a > 0.49) != (b > 0.49)
        assert differ.sum() <= 10, differ.sum()
        assert np.all(np.abs(a[differ] - 0.49) <= PARITY_TOLERANCE / 4), a[differ]


def test_evaluate_cli_with_the_onnx_backend(cli_export, tmp_path, shared_data, capsys):
    ckpt, exp, _ = cli_export
    common = ["--datasets", "GrabCut", "--data-root", str(shared_data), "--limit", "1", "--max-clicks", "3", "--quiet"]
    assert cli(["evaluate", "--checkpoint", str(ckpt), "--device", "cpu", "--out", str(tmp_path / "t"), *common]) == 0
    assert cli(["evaluate", "--onnx", str(exp), "--out", str(tmp_path / "o"), *common]) == 0
    capsys.readouterr()
    rec = {k: [json.loads(x) for x in (tmp_path / k / "records.jsonl").read_text().splitlines()] for k in ("t", "o")}
    assert len(rec["t"]) == len(rec["o"]) >= 1
    for a, b in zip(rec["t"], rec["o"]):
        assert np.allclose(a["ious"], b["ious"], atol=1e-3)
    run = json.loads((tmp_path / "o" / "run.json").read_text())
    assert "onnx" in json.dumps(run)
    assert cli(["evaluate", "--onnx", str(exp), "--model", "x", "--out", str(tmp_path / "z"), *common]) == 1
    assert "--onnx" in capsys.readouterr().err


def test_serve_an_onnx_export(exported):
    """``icmformer serve --onnx DIR`` answers a CVAT request with the Predictor's mask on the same graphs."""
    httpx = pytest.importorskip("httpx")
    from serving import noise_image, png_b64, running_server

    _, out, _ = exported
    image = noise_image(21)
    p = Predictor(OnnxBackend(out, threads=1))
    p.set_image(image)
    p.add_click(40, 60, True)
    expected, _ = p.add_click(80, 10, False)
    body = {"image": png_b64(image), "pos_points": [[60, 40]], "neg_points": []}
    with running_server("--onnx", str(out)) as (url, _), httpx.Client(timeout=120) as c:
        assert c.get(url + "/health").json()["backend"] == "onnxruntime"
        assert c.post(url + "/cvat", json=body).status_code == 200
        r = c.post(url + "/cvat", json={**body, "neg_points": [[10, 80]]})
        assert r.status_code == 200, r.text
        assert np.array_equal(np.asarray(r.json()["mask"]) == 255, expected)
