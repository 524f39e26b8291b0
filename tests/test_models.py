"""Model zoo: forward shapes, the encode/predict split, ablation switches, bad inputs, attention."""
from __future__ import annotations

import pytest
import torch

from icmformer.models.clicks import clicks_to_tensor
from icmformer.models.cross import VARIANTS
from icmformer.models.registry import PAPER_MODELS, create_model, list_models, tiny_overrides


def tiny(name: str, **extra):
    return create_model(name, **{**tiny_overrides(name), **extra}).eval()


def inputs(model, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = model.default_input_size
    image = torch.rand(batch, 3, s, s, generator=g)
    prev = torch.rand(batch, 1, s, s, generator=g)
    clicks = clicks_to_tensor([[(s // 4, s // 3, True)], [(s // 2, s // 2, True), (3, s - 5, False)]][:batch])
    return image, clicks, prev


def test_registry_has_the_paper_models():
    names = list_models()
    for required in PAPER_MODELS:
        assert required in names


@pytest.mark.parametrize("name", list_models())
def test_forward_shapes_every_entry(name):
    model = tiny(name)
    image, clicks, prev = inputs(model)
    with torch.no_grad():
        out = model(image, clicks, prev)
    assert out.shape == (2, 1, *image.shape[-2:])
    assert torch.isfinite(out).all()


SWITCHES = [dict(cross_variant=v) for v in VARIANTS] + [dict(cross_modality=False), dict(num_cross_blocks=1)]


@pytest.mark.parametrize("name", ["icmformer_vit_base_448", "icmformer_swin_base_384"])
@pytest.mark.parametrize("switch", SWITCHES, ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()))
def test_ablation_switches_forward_and_split(name, switch):
    model = tiny(name, **switch)
    image, clicks, prev = inputs(model)
    with torch.no_grad():
        full = model(image, clicks, prev)
        state = model.encode_image(image)
        split = model.predict_clicks(state, clicks, prev)
    assert full.shape == (2, 1, *image.shape[-2:])
    torch.testing.assert_close(split, full, rtol=0, atol=0)


@pytest.mark.parametrize(
    "name,extra",
    [
        ("icmformer_vit_base_448", dict(shared_depth=1)),
        ("icmformer_vit_base_448", dict(shared_depth=3, window_size=None)),
        ("icmformer_swin_base_384", dict(shared_stages=1)),
        ("icmformer_swin_base_384", dict(shared_stages=3)),
    ],
)
def test_where_the_shared_group_ends(name, extra):
    model = tiny(name, **extra)
    image, clicks, prev = inputs(model)
    with torch.no_grad():
        out = model.predict_clicks(model.encode_image(image), clicks, prev)
    assert out.shape == (2, 1, *image.shape[-2:])


def test_variants_change_the_computation():
    torch.manual_seed(0)
    outs = {}
    for v in VARIANTS:
        torch.manual_seed(0)
        model = tiny("icmformer_vit_base_448", cross_variant=v)
        image, clicks, prev = inputs(model)
        with torch.no_grad():
            outs[v] = model(image, clicks, prev)
    vals = list(outs.values())
    for i in range(len(vals)):
        for j in range(i + 1, len(vals)):
            assert not torch.allclose(vals[i], vals[j])


def test_clicks_change_the_prediction():
    model = tiny("icmformer_vit_base_448")
    image, clicks, prev = inputs(model)
    with torch.no_grad():
        state = model.encode_image(image)
        a = model.predict_clicks(state, clicks, prev)
        moved = clicks.clone()
        moved[0, 0, 0] += 20
        b = model.predict_clicks(state, moved, prev)
    assert not torch.allclose(a[0], b[0])
    torch.testing.assert_close(a[1], b[1])


@pytest.mark.parametrize("name", ["icmformer_vit_base_448", "icmformer_swin_base_384"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_parameter_takes_part_in_the_forward(name, variant):
    model = tiny(name, cross_variant=variant, head_dropout=0.0).train()
    image, clicks, prev = inputs(model)
    model(image, clicks, prev).sum().backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert unused == []


def test_vit_larger_input_uses_interpolated_position_embedding():
    # the official DAVIS protocol evaluates ViT-B@448 at 672 (3x3 windows)
    model = tiny("icmformer_vit_base_448")  # 64 px training size, windows of 2 tokens
    image = torch.rand(1, 3, 96, 96)
    clicks = clicks_to_tensor([[(40, 40, True)]])
    with torch.no_grad():
        out = model(image, clicks)
    assert out.shape == (1, 1, 96, 96)


def test_attention_maps_returned_on_request():
    model = tiny("icmformer_vit_base_448", num_cross_blocks=2)
    image, clicks, prev = inputs(model)
    with torch.no_grad():
        plain = model.predict_clicks(model.encode_image(image), clicks, prev)
        logits, extras = model.predict_clicks(model.encode_image(image), clicks, prev, return_attention=True)
    torch.testing.assert_close(logits, plain, rtol=1e-5, atol=1e-5)
    attn = extras["cross_attention"]
    assert len(attn) == 2
    gh, gw = extras["grid"]
    n = gh * gw
    assert attn[0].shape == (2, 2, n, n)
    # each query's weights sum to one over the keys of its window; zero outside the window
    torch.testing.assert_close(attn[0].sum(-1), torch.ones(2, 2, n))
    win = model.config.window_size
    q_row, q_col = 0, 0  # query token (0, 0) lies in window (0, 0)
    weights = attn[0][0, 0, q_row * gw + q_col].view(gh, gw)
    assert weights[:win, :win].sum() > 0.999
    assert weights[win:, :].abs().sum() == 0 and weights[:, win:].abs().sum() == 0
    assert extras["click_tokens"].shape == (2, n, model.config.embed_dim)


def test_swin_attention_maps_are_global():
    model = tiny("icmformer_swin_base_384")
    image, clicks, prev = inputs(model)
    with torch.no_grad():
        _, extras = model.predict_clicks(model.encode_image(image), clicks, prev, return_attention=True)
    h, w = extras["grid"]
    assert extras["cross_attention"][0].shape == (2, 2, h * w, h * w)
    assert (extras["cross_attention"][0] > 0).all()


def test_fused_and_explicit_attention_agree():
    model = tiny("icmformer_swin_base_384")
    image, clicks, prev = inputs(model)
    with torch.no_grad():
        a = model(image, clicks, prev)
        b = model.set_fused_attention(False)(image, clicks, prev)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------ bad inputs
def test_unknown_model_lists_known_ones():
    with pytest.raises(ValueError, match="icmformer_vit_base_448"):
        create_model("icmformer_vit_gigantic")


def test_unknown_override_lists_fields():
    with pytest.raises(ValueError, match="unknown model override.*embed_dimm"):
        create_model("icmformer_vit_base_448", embed_dimm=3)


@pytest.mark.parametrize(
    "override,match",
    [
        (dict(cross_variant="Y,X"), "cross_variant"),
        (dict(num_heads=5), "num_heads"),
        (dict(shared_depth=20), "shared_depth"),
        (dict(cross_act="tanh"), "cross_act"),
    ],
)
def test_invalid_config_names_the_field(override, match):
    with pytest.raises(ValueError, match=match):
        create_model("icmformer_vit_base_448", **override)


def test_bad_tensors_give_clear_errors():
    model = tiny("icmformer_vit_base_448")
    image, clicks, prev = inputs(model)
    with pytest.raises(ValueError, match="B x 3 x H x W"):
        model(image[:, :2], clicks, prev)
    with pytest.raises(ValueError, match="float"):
        model((image * 255).to(torch.uint8), clicks, prev)
    with pytest.raises(ValueError, match="prev_mask is 32x32"):
        model(image, clicks, prev[..., :32, :32])
    with pytest.raises(ValueError, match="B x N x 3"):
        model(image, clicks[..., :2], prev)
    with pytest.raises(ValueError, match="batch"):
        model(image, clicks[:1], prev)
    with pytest.raises(ValueError, match="outside"):
        bad = clicks.clone()
        bad[0, 0, 1] = 1000
        model(image, bad, prev)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        model(torch.rand(1, 3, 60, 60), clicks[:1])
    with pytest.raises(ValueError, match="attention windows"):
        model(torch.rand(1, 3, 48, 48), clicks_to_tensor([[(4, 4, True)]]))


@pytest.mark.parametrize("name", ["icmformer_vit_base_448", "icmformer_swin_base_384"])
def test_low_resolution_head_fusion_equals_the_official_order(name):
    model = tiny(name)
    image, clicks, prev = inputs(model)
    with torch.no_grad():
        fast = model(image, clicks, prev)
        model.head.low_res_fusion = False
        official = model(image, clicks, prev)
    torch.testing.assert_close(fast, official, rtol=1e-5, atol=1e-5)
