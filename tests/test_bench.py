"""Benchmark machinery: naive path, int8 fast mode, the side-by-side run and its CLI."""
from __future__ import annotations

import copy
import json

import pytest
import torch

from icmformer.cli import main as cli
from icmformer.models.clicks import clicks_to_tensor
from icmformer.models.fast import AutocastBf16, Float32Head, NaiveForward, make_fast, quantize_int8, to_bf16
from icmformer.models.registry import create_model, tiny_overrides

TINY = tiny_overrides("icmformer_vit_base_448")


def model_and_inputs():
    model = create_model("icmformer_vit_base_448", **TINY).eval()
    g = torch.Generator().manual_seed(0)
    image = torch.rand(2, 3, 64, 64, generator=g)
    prev = torch.rand(2, 1, 64, 64, generator=g)
    clicks = clicks_to_tensor([[(10, 20, True)], [(30, 30, True), (5, 50, False)]])
    return model, image, clicks, prev


def test_naive_forward_recomputes_the_image_and_matches_the_model():
    model, image, clicks, prev = model_and_inputs()
    naive = NaiveForward(model)
    assert naive.model.head.low_res_fusion is False
    assert all(not m.fused_attn for m in naive.model.modules() if hasattr(m, "fused_attn"))
    # the "state" is just the image: every predict_clicks runs the image branch again
    assert naive.encode_image(image) is image
    calls = []
    orig = naive.model.encode_image
    naive.model.encode_image = lambda x: calls.append(1) or orig(x)
    with torch.no_grad():
        a = naive.predict_clicks(naive.encode_image(image), clicks, prev)
        naive.predict_clicks(naive.encode_image(image), clicks, prev)
        b = model(image, clicks, prev)
    assert len(calls) == 2
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # the original model is untouched (naive works on a copy)
    assert model.head.low_res_fusion is True


def test_int8_fast_mode_quantises_linear_layers_and_stays_close():
    model, image, clicks, prev = model_and_inputs()
    fast = quantize_int8(model)
    kinds = {type(m).__module__ + "." + type(m).__name__ for m in fast.modules()}
    assert any("quantized" in k and k.endswith("Linear") for k in kinds)
    assert not any(type(m) is torch.nn.Linear for m in fast.modules())
    with torch.no_grad():
        exact = model(image, clicks, prev)
        approx = fast(image, clicks, prev)
    err = (exact - approx).abs().max().item()
    assert 0 < err < 0.1 * exact.abs().max().item() + 1e-3
    # the original model keeps fp32 Linear layers
    assert any(type(m) is torch.nn.Linear for m in model.modules())


def test_int8_fast_mode_refuses_non_cpu_models():
    model, *_ = model_and_inputs()
    with torch.device("meta"):
        meta = create_model("icmformer_vit_base_448", **TINY)
    with pytest.raises(ValueError, match="CPU"):
        quantize_int8(meta)


def test_bf16_fast_mode_casts_weights_once_and_matches_plain_autocast():
    model, image, clicks, prev = model_and_inputs()
    model.set_fused_attention(True)
    model.head.low_res_fusion = True
    fast = to_bf16(model)
    assert fast.quantized == "bf16-autocast" and fast.precast
    assert fast.fp32_head and isinstance(fast.model.head, Float32Head) and fast.model.head.low_res_fusion
    head = set(fast.model.head.modules())
    layers = [m for m in fast.model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    assert layers and all(m.weight.dtype == torch.bfloat16 for m in layers if m not in head)
    assert any(m in head for m in layers) and all(m.weight.dtype == torch.float32 for m in layers if m in head)
    # norms stay fp32, and the original model is untouched
    assert all(m.weight.dtype == torch.float32 for m in fast.model.modules() if isinstance(m, torch.nn.LayerNorm))
    assert all(p.dtype == torch.float32 for p in model.parameters())
    with torch.inference_mode():
        exact = model(image, clicks, prev)
        plain = AutocastBf16(model)(image, clicks, prev)
        pre = fast(image, clicks, prev)
    assert pre.dtype == torch.float32 and pre.shape == exact.shape
    scale = exact.abs().max().item()
    assert (pre - plain).abs().max().item() <= 0.02 * scale + 1e-3  # bf16 kernel rounding only
    assert 0 < (pre - exact).abs().max().item() < 0.1 * scale + 1e-2  # really bf16, still close


def test_bf16_head_runs_in_fp32_inside_autocast():
    model, image, clicks, prev = model_and_inputs()
    wrapped = Float32Head(copy.deepcopy(model.head).eval())
    seen = []
    hook = model.head.register_forward_pre_hook(lambda mod, args: seen.append(args[0]))
    with torch.inference_mode():
        model(image, clicks, prev)
        hook.remove()
        feats = seen[0]
        low = [f.to(torch.bfloat16) for f in feats]
        ref = model.head([f.float() for f in low])  # fp32 head on the bf16-rounded features
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = wrapped(low)
            plain = model.head(low)  # what autocast would do without the wrapper
    assert out.dtype == torch.float32 and torch.equal(out, ref)
    assert plain.dtype == torch.bfloat16 and not torch.equal(plain.float(), ref)
    with pytest.raises(ValueError, match="fp32_head needs precast"):
        AutocastBf16(model, fp32_head=True)


def test_make_fast_names_its_modes():
    model, *_ = model_and_inputs()
    assert make_fast(model, "int8").quantized == "int8-dynamic"
    assert make_fast(model, "bf16").quantized == "bf16-autocast"
    with pytest.raises(ValueError, match="unknown fast mode 'fp8'; choose from int8, bf16"):
        make_fast(model, "fp8")
    with torch.device("meta"):
        meta = create_model("icmformer_vit_base_448", **TINY)
    with pytest.raises(ValueError, match="CPU"):
        to_bf16(meta)


def test_benchmark_side_by_side_on_a_tiny_model():
    from icmformer.benchmark import run_benchmark

    res = run_benchmark("icmformer_vit_base_448", clicks=3, repeats=1, progress=False, **TINY)
    assert [m.mode for m in res.modes] == ["naive", "optimised", "fast"]
    naive, opt, fast = (res.mode(m) for m in ("naive", "optimised", "fast"))
    assert naive.ratio_to_naive == pytest.approx(1.0)
    assert opt.ratio_to_naive == pytest.approx(opt.spc_s / naive.spc_s)
    for m in res.modes:
        assert m.clicks_measured == 3 and m.spc_min_s <= m.spc_s <= m.spc_max_s
        assert m.encode_calls_per_instance <= 3
        assert m.instances_per_s > 0 and m.throughput_extrapolated
    assert res.agreement["max_abs_logit_diff"] < 1e-4
    assert res.instance.startswith("synthetic")
    f = res.flops
    assert f["encode_gflops"] > 0 and f["exact_floor"] == pytest.approx(
        f["decode_gflops"] / (f["encode_gflops"] + f["decode_gflops"]))
    from icmformer.benchmark import format_table

    assert f"cannot go below {f['exact_floor']:.2f}x naive" in format_table(res)


def test_bench_cli_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    args = ["bench", "--model", "icmformer_vit_tiny_224", "--modes", "naive,optimised", "--clicks", "1", "--repeats", "1",
            "--data-root", "", "--json", "--out", str(out)]  # fmt: skip ('' : the synthetic image)
    assert cli(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert json.loads(out.read_text()) == printed
    assert {m["mode"] for m in printed["modes"]} == {"naive", "optimised"}
    assert printed["device"] == "cpu" and "cores" in printed["device_name"]
    assert cli(["bench", "--modes", "turbo", "--clicks", "1", "--repeats", "1", "--model", "icmformer_vit_tiny_224"]) == 1
    assert "unknown benchmark mode" in capsys.readouterr().err
