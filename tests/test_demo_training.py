"""The demo-model pieces: conv stem, zoom-in aware training, mixed datasets, cosine schedule,
validation during training."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from icmformer.data.train_datasets import FolderTrainDataset, MixedTrainDataset
from icmformer.evaluation.clicker import Click
from icmformer.evaluation.roi import get_object_roi, map_clicks, update_roi
from icmformer.models.factory import DEFAULT_PRETRAINED_MODEL
from icmformer.models.icmformer import ImageState
from icmformer.models.registry import create_model, get_config
from icmformer.training.config import config_from_dict
from icmformer.training.trainer import Trainer, cosine_factor
from icmformer.training.zoom import (
    crop_views,
    map_clicks_to_views,
    paste_views,
    update_rois,
    zoom_iterative_forward,
)
from tests.test_trainer import make_folder_dataset, tiny_config_dict

SMALL_DEMO = dict(embed_dim=32, depth=2, num_heads=2, img_size=64, neck_dims=(8, 16, 32, 64), head_channels=16,
                  stem_channels=8)  # fmt: skip


# ------------------------------------------------------------------------------ conv stem model
def test_conv_stem_two_stage_api_matches_forward_and_state_carries_skip():
    model = create_model("icmformer_vit_demo_224", **SMALL_DEMO).eval()
    image = torch.rand(2, 3, 64, 64)
    clicks = torch.tensor([[[20.0, 30.0, 1.0]], [[40.0, 10.0, 1.0]]])
    prev = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        full = model(image, clicks, prev)
        state = model.encode_image(image)
        two = model.predict_clicks(state, clicks, prev)
    assert state.skip is not None and tuple(state.skip.shape) == (2, 8, 16, 16)
    torch.testing.assert_close(full, two, rtol=0, atol=0)
    # cat / select keep the stem features with their batch item
    both = ImageState.cat([state.select(1), state.select(0)])
    torch.testing.assert_close(both.skip, state.skip.flip(0), rtol=0, atol=0)
    with torch.no_grad():
        swapped = model.predict_clicks(both, clicks.flip(0), prev.flip(0))
    torch.testing.assert_close(swapped, full.flip(0), rtol=0, atol=1e-6)


def test_conv_stem_features_change_the_output():
    """The skip connection is live: zeroing it changes the logits."""
    model = create_model("icmformer_vit_demo_224", **SMALL_DEMO).eval()
    image, clicks = torch.rand(1, 3, 64, 64), torch.tensor([[[32.0, 32.0, 1.0]]])
    with torch.no_grad():
        state = model.encode_image(image)
        a = model.predict_clicks(state, clicks)
        state.skip = torch.zeros_like(state.skip)
        b = model.predict_clicks(state, clicks)
    assert (a - b).abs().max() > 1e-4


def test_paper_models_keep_the_patch_embedding():
    for name in ("icmformer_vit_base_448", "icmformer_vit_tiny_224"):
        assert get_config(name).stem == "patch"
    keys = create_model("icmformer_vit_tiny_224").state_dict().keys()
    assert not any(k.startswith(("skip_proj", "backbone.patch_embed.conv")) for k in keys)


@pytest.mark.parametrize("override, key", [(dict(stem="wavelet"), "stem"), (dict(patch_size=8), "stem"),
                                           (dict(stem_channels=7), "stem_channels")])  # fmt: skip
def test_conv_stem_config_errors_name_the_field(override, key):
    with pytest.raises(ValueError, match=f"{key}="):
        get_config("icmformer_vit_demo_224", **override)


# ------------------------------------------------------------------------------ zoom-in views
def test_weights_of_one_input_size_load_into_the_same_network_at_another(tmp_path):
    """Our checkpoints load into the same registry network at another input size (the shipped
    icmformer_vit_demo_320 was fine-tuned from the 224 model's weights): the position embedding
    is resized to the new token grid exactly as the 224 model resizes it for a 320 px input, so
    both give the same logits; a file of the model's own size loads unchanged."""
    from icmformer.models.checkpoint import save_checkpoint
    from icmformer.models.factory import load_weights

    assert get_config("icmformer_vit_demo_320").img_size == 320
    assert get_config("icmformer_vit_demo_320").replace(img_size=224) == get_config("icmformer_vit_demo_224")
    torch.manual_seed(0)
    small = create_model("icmformer_vit_demo_224", **SMALL_DEMO).eval()  # 64 px: a 4x4 token grid
    torch.nn.init.normal_(small.backbone.pos_embed, std=0.5)
    save_checkpoint(small, tmp_path / "w.safetensors")
    big = create_model("icmformer_vit_demo_224", **{**SMALL_DEMO, "img_size": 96}).eval()  # 6x6 grid
    load_weights(big, tmp_path / "w.safetensors")
    assert big.backbone.pos_embed.shape[1] == 36
    image, clicks = torch.rand(1, 3, 96, 96), torch.tensor([[[40.0, 50.0, 1.0]]])
    with torch.no_grad():
        assert torch.equal(big(image, clicks), small(image, clicks))  # the 64 px model, fed 96 px
    same = create_model("icmformer_vit_demo_224", **SMALL_DEMO)
    load_weights(same, tmp_path / "w.safetensors")
    assert torch.equal(same.backbone.pos_embed, small.backbone.pos_embed)
    other = create_model("icmformer_vit_demo_224", **{**SMALL_DEMO, "embed_dim": 48, "img_size": 96})
    with pytest.raises(ValueError, match="shape mismatches"):  # another width still fails in one message
        load_weights(other, tmp_path / "w.safetensors")


def test_view_clicks_match_the_evaluation_mapping():
    clicks = [Click(True, (50, 70)), Click(False, (10, 3)), Click(True, (120, 90))]
    roi = (20, 139, 30, 129)
    rows = torch.tensor([[[c.coords[0], c.coords[1], 1.0 if c.is_positive else 0.0] for c in clicks]], dtype=torch.float32)
    ours = map_clicks_to_views(rows, [roi], 224)[0].numpy()
    ref = map_clicks(clicks, roi, 224)
    # the click above-left of the ROI becomes padding in both
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-4)
    assert ours[1].tolist() == [-1.0, -1.0, -1.0]


def test_whole_canvas_view_round_trips():
    probs = torch.rand(2, 1, 32, 32)
    whole = [(0, 31, 0, 31)] * 2
    torch.testing.assert_close(paste_views(crop_views(probs, whole, 32), whole, (32, 32)), probs)
    # a pasted crop is zero outside its ROI, as the evaluation's paste
    pasted = paste_views(torch.ones(1, 1, 8, 8), [(4, 11, 6, 21)], (32, 32))
    assert pasted[0, 0, 4:12, 6:22].min() == 1 and pasted.sum() == 8 * 16


def test_roi_update_follows_the_evaluation_rule():
    h = w = 200
    prob = torch.zeros(1, 1, h, w)
    prob[0, 0, 80:120, 60:100] = 0.9
    clicks = torch.tensor([[[100.0, 80.0, 1.0], [-1.0, -1.0, -1.0]]])
    whole = (0, h - 1, 0, w - 1)
    new = update_rois([whole], prob, clicks, [True], min_crop_size=50)
    expect = get_object_roi((prob[0, 0] > 0.5).numpy(), [Click(True, (100, 80))], 1.4, 50)
    assert new == [expect]
    # the evaluation's rule gives the same ROI from the same map and clicks
    assert update_roi((prob[0, 0] > 0.5).numpy(), [Click(True, (100, 80))], whole, (h, w), min_crop_size=50) == expect
    # kept while the clicks stay inside and the candidate overlaps; samples without zoom keep theirs
    assert update_rois([expect], prob, clicks, [True], min_crop_size=50) == [expect]
    assert update_rois([whole], prob, clicks, [False], min_crop_size=50) == [whole]


def test_zoom_forward_views_and_gradients():
    torch.manual_seed(0)
    model = create_model("icmformer_vit_demo_224", **SMALL_DEMO)
    canvas = 96
    gt = torch.zeros(4, 1, canvas, canvas)
    gt[:, :, 30:70, 20:60] = 1
    image = torch.rand(4, 3, canvas, canvas)
    clicks = torch.full((4, 4, 3), -1.0)
    clicks[:, 0] = torch.tensor([50.0, 40.0, 1.0])
    rng = np.random.default_rng(0)
    logits, gt_view, n = zoom_iterative_forward(model, image, gt, clicks, rng, input_size=64, zoom_prob=1.0,
                                                min_crop_size=40, max_num_next_clicks=3)  # fmt: skip
    assert logits.shape == gt_view.shape == (4, 1, 64, 64) and 0 <= n <= 3
    assert set(torch.unique(gt_view).tolist()) <= {0.0, 1.0}
    logits.float().mean().backward()
    assert model.backbone.patch_embed.conv1[0].weight.grad is not None
    # without zoom every view is the whole canvas
    logits, gt_view, _ = zoom_iterative_forward(model, image, gt, clicks, np.random.default_rng(1), input_size=64,
                                                zoom_prob=0.0, max_num_next_clicks=2)  # fmt: skip
    torch.testing.assert_close(gt_view, torch.nn.functional.interpolate(gt, size=(64, 64), mode="nearest"))


# ------------------------------------------------------------------------------ data, schedule
def test_mixed_dataset_draws_every_source_by_weight(tmp_path):
    a = FolderTrainDataset(make_folder_dataset(tmp_path / "a", n=2, seed=1))
    b = FolderTrainDataset(make_folder_dataset(tmp_path / "b", n=6, seed=2))
    mixed = MixedTrainDataset([a, b], [0.75, 0.25], epoch_len=400, seed=0)
    assert mixed.num_images() == 8
    idx = np.array([mixed[i]["image_index"] for i in range(400)])
    share_a = float((idx < 2).mean())
    assert 0.65 < share_a < 0.85, share_a  # 0.75 by weight, although a has 2 of the 8 images
    rng = np.random.default_rng(0)
    assert mixed.get_layers(3, rng).image.shape == b.get_layers(1, rng).image.shape


def test_cosine_schedule_warms_up_and_decays_to_the_floor():
    f = [cosine_factor(s, total=100, warmup=10, min_ratio=0.02) for s in range(101)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(x >= y for x, y in zip(f[10:], f[11:]))
    assert f[100] == pytest.approx(0.02)


@pytest.mark.parametrize("patch, key", [
    ({"data": {"kind": "mixed"}}, "data.sources"),
    ({"data": {"kind": "mixed", "sources": [{"kind": "lmdb", "data_root": "x"}]}}, r"data.sources\[0\].kind"),
    ({"schedule": {"kind": "linear"}}, "schedule.kind"),
    ({"zoom": {"prob": 1.5}}, "zoom.prob"),
    ({"optim": {"clip_grad_norm": -1.0}}, "optim.clip_grad_norm"),
    ({"val": {"every_steps": 10}}, "val.data_root"),
    ({"clicks": {"single_click_prob": 1.5}}, "clicks.single_click_prob"),
    ({"zoom": {"input_sizes": [64, 96]}}, "zoom.input_size_probs"),
    ({"zoom": {"input_sizes": [64, 96], "input_size_probs": [0.5, 0.6]}}, "zoom.input_size_probs"),
    ({"zoom": {"input_sizes": [8], "input_size_probs": [1.0]}}, "zoom.input_sizes"),
    ({"data": {"augment": {"whole_image_prob": 2.0}}}, "whole_image_prob"),
])  # fmt: skip
def test_new_config_keys_are_checked(patch, key):
    with pytest.raises(ValueError, match=key):
        config_from_dict(patch)


def _demo_cfg(tmp_path, **extra):
    root = make_folder_dataset(tmp_path / "data", n=4, size=96)
    d = tiny_config_dict(root, tmp_path / "run")
    d["model"] = {"name": "icmformer_vit_demo_224", "overrides": {k: list(v) if isinstance(v, tuple) else v
                                                                  for k, v in SMALL_DEMO.items()}}  # fmt: skip
    d["data"]["augment"]["crop_size"] = [96, 96]
    d["zoom"] = {"enabled": True, "prob": 1.0, "min_crop_size": 40, "input_size": 64}
    d["schedule"] = {"kind": "cosine", "epochs": 2, "warmup_steps": 2, "milestones": []}
    d["optim"]["clip_grad_norm"] = 1.0
    d.update(extra)
    return config_from_dict(d), root


def test_trainer_zoom_cosine_run_resumes_bit_exactly(tmp_path):
    cfg, _ = _demo_cfg(tmp_path)
    full = Trainer(cfg, output_dir=tmp_path / "full", quiet=True)
    full.fit()
    lrs = [g["lr"] for g in full.optimizer.param_groups]
    cfg2, _ = _demo_cfg(tmp_path)
    cfg2.max_steps = 3
    Trainer(cfg2, output_dir=tmp_path / "part", quiet=True).fit()
    cfg2.max_steps = 0
    resumed = Trainer(cfg2, output_dir=tmp_path / "part", resume=True, quiet=True)
    resumed.fit()
    assert resumed.state.step == full.state.step == 6
    for (k, v), (_, w) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        torch.testing.assert_close(v, w, rtol=0, atol=0, msg=k)
    assert [g["lr"] for g in resumed.optimizer.param_groups] == lrs
    assert lrs[0] == pytest.approx(cfg.optim.lr * cosine_factor(6, 6, 2, cfg.schedule.min_lr_ratio))
    assert lrs[0] == pytest.approx(cfg.optim.lr * cfg.schedule.min_lr_ratio)


def test_single_click_prob_changes_training_and_zero_keeps_old_runs(tmp_path):
    """``clicks.single_click_prob``: 0 (default) draws nothing, so older runs replay exactly; 1 makes
    every sample start from its first positive click alone, which changes what the model learns."""

    def weights(**clicks):
        cfg, _ = _demo_cfg(tmp_path)
        for k, v in clicks.items():
            setattr(cfg.clicks, k, v)
        cfg.max_steps = 3
        t = Trainer(cfg, output_dir=tmp_path / f"run_{len(list(tmp_path.iterdir()))}", quiet=True)
        t.fit()
        return t.model.state_dict()

    base, zero, one = weights(), weights(single_click_prob=0.0), weights(single_click_prob=1.0)
    for k in base:
        torch.testing.assert_close(base[k], zero[k], rtol=0, atol=0, msg=k)
    assert any(not torch.equal(base[k], one[k]) for k in base)


def test_view_size_is_drawn_per_batch_from_input_sizes(tmp_path, monkeypatch):
    """``zoom.input_sizes``: every batch's views take one of the listed sizes, drawn by weight;
    the list left empty keeps ``input_size`` and draws nothing (older runs replay exactly)."""
    import icmformer.training.trainer as trainer_mod

    seen: list[int] = []
    real = trainer_mod.zoom_iterative_forward

    def spy(*args, input_size, **kw):
        seen.append(input_size)
        return real(*args, input_size=input_size, **kw)

    monkeypatch.setattr(trainer_mod, "zoom_iterative_forward", spy)

    def run(**zoom):
        cfg, _ = _demo_cfg(tmp_path)
        for k, v in zoom.items():
            setattr(cfg.zoom, k, v)
        cfg.max_steps = 6
        seen.clear()
        t = Trainer(cfg, output_dir=tmp_path / f"run_{len(list(tmp_path.iterdir()))}", quiet=True)
        t.fit()
        return list(seen), t.model.state_dict()

    base, w0 = run()
    empty, w1 = run(input_sizes=[], input_size_probs=[])
    assert base == empty and set(base) == {64}
    for k in w0:
        torch.testing.assert_close(w0[k], w1[k], rtol=0, atol=0, msg=k)
    mixed, _ = run(input_sizes=[48, 80], input_size_probs=[0.5, 0.5])
    assert set(mixed) == {48, 80}
    only, _ = run(input_sizes=[48, 80], input_size_probs=[0.0, 1.0])
    assert set(only) == {80}


def test_validation_during_training_writes_rows(tmp_path, shared_data):
    bsds = shared_data / "BSDS_train"
    if not bsds.is_dir():
        pytest.skip(f"{bsds} not found")
    cfg, _ = _demo_cfg(tmp_path, val={"every_steps": 2, "kind": "sbd", "data_root": str(bsds), "split": "val",
                                      "max_instances": 2, "max_clicks": 2})  # fmt: skip
    cfg.max_steps = 3
    Trainer(cfg, output_dir=tmp_path / "run", quiet=True).fit()
    rows = [json.loads(x) for x in (tmp_path / "run" / "val.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 3]  # every 2 steps, and at the end
    for r in rows:
        assert r["instances"] == 2 and len(r["miou"]) == 2 and 1 <= r["noc90"] <= 2
        assert all(0.0 <= v <= 1.0 for v in r["miou"]) and r["train_time_s"] >= 0
    # val.batch_size runs the same validation through the batched evaluator: the same rows
    cfg.val.batch_size = 2
    batched = Trainer(cfg, output_dir=tmp_path / "run_b", quiet=True).fit()
    rows_b = [json.loads(x) for x in (tmp_path / "run_b" / "val.jsonl").read_text().splitlines()]
    keys = ("step", "instances", "noc85", "noc90", "nof90", "miou")
    assert [{k: r[k] for k in keys} for r in rows_b] == [{k: r[k] for k in keys} for r in rows], batched


# ------------------------------------------------------------------------------ the shipped model
def test_shipped_model_improves_from_click_one_to_click_two(shared_data):
    """On held-out BSDS val (never trained on), with the official zoom-in protocol, the mean IoU
    after the second click is not below the first (the old demo model's Fig. 4 dropped 0.25 -> 0.10)."""
    from icmformer.models.factory import list_models
    from icmformer.training.validate import validate_model

    name = DEFAULT_PRETRAINED_MODEL
    if name not in list_models(pretrained=True):
        pytest.fail(f"{name} ships no weights: icmformer/weights/{name}.safetensors is missing")
    bsds = shared_data / "BSDS_train"
    if not bsds.is_dir():
        pytest.skip(f"{bsds} not found")
    model = create_model(name, pretrained=True)
    row = validate_model(model, "sbd", str(bsds), split="val", max_instances=40, max_clicks=3)
    m1, m2, m3 = row["miou"]
    assert m2 >= m1 and m3 >= m2, row["miou"]
    assert m1 > 0.2 and m3 > m1 + 0.1, row["miou"]  # untrained: about 0.1 at every click


def test_fresh_install_segments_with_the_shipped_model_by_default(tmp_path, capsys):
    """`icmformer predict` without --checkpoint / --model uses the shipped demo weights."""
    import icmformer
    from PIL import Image

    from icmformer.cli import main

    assert DEFAULT_PRETRAINED_MODEL in icmformer.list_models(pretrained=True)
    # a yellow box on a dark ground, 240x320 px (the 320 px model's first click on a flat box
    # covers little of it, see the model card; three clicks must give the box)
    img = np.full((240, 320, 3), 40, np.uint8)
    img[60:180, 100:240] = (220, 200, 30)
    Image.fromarray(img).save(tmp_path / "box.png")
    clicks = ["--click", "120,170,+", "--click", "70,110,+", "--click", "170,230,+"]  # centre, then two corners
    rc = main(["predict", "--image", str(tmp_path / "box.png"), *clicks, "--out", str(tmp_path / "m.png")])
    err = capsys.readouterr().err
    assert rc == 0 and "UNTRAINED" not in err
    mask = np.array(Image.open(tmp_path / "m.png")) > 127
    box = np.zeros(mask.shape, bool)
    box[60:180, 100:240] = True
    iou = (mask & box).sum() / (mask | box).sum()
    assert iou > 0.8, iou
