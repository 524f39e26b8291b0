"""The trainer: iterative step, overfitting one batch, exact resume, data sharding, DDP on CPU."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch

from icmformer.models.registry import create_model, tiny_overrides
from icmformer.training.config import config_from_dict
from icmformer.training.trainer import (
    STATE_FILE,
    Trainer,
    batch_iou,
    compact_clicks,
    epoch_batches,
    iterative_forward,
    load_training_state,
)

# ------------------------------------------------------------------------------ shared helpers
# (also used by test_train_cli.py and the DDP worker script)
TINY_MODEL = "icmformer_vit_base_448"


def tiny_model_overrides() -> dict[str, Any]:
    """``tiny_overrides`` of the ViT-B config (64 x 64 input), as YAML-friendly values."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in tiny_overrides(TINY_MODEL).items()}


def make_folder_dataset(root: Path, n: int = 4, size: int = 72, seed: int = 0) -> Path:
    """Write ``n`` small images with one coloured ellipse each into ``root/img`` + ``root/gt``."""
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    (root / "gt").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = rng.integers(0, 90, (size, size, 3), dtype=np.uint8)
        mask = np.zeros((size, size), np.uint8)
        c = (int(rng.integers(size // 3, 2 * size // 3)), int(rng.integers(size // 3, 2 * size // 3)))
        axes = (int(rng.integers(size // 6, size // 3)), int(rng.integers(size // 6, size // 3)))
        cv2.ellipse(mask, c, axes, float(rng.integers(0, 180)), 0, 360, 255, -1)
        img[mask > 0] = rng.integers(150, 255, 3, dtype=np.uint8)
        cv2.imwrite(str(root / "img" / f"im{i:02d}.png"), img[:, :, ::-1])
        cv2.imwrite(str(root / "gt" / f"im{i:02d}.png"), mask)
    return root


def tiny_config_dict(data_root: Path, output_dir: Path, **top: Any) -> dict[str, Any]:
    """A config (nested dict) for a tiny model on a :func:`make_folder_dataset` folder.

    Epochs of 6 items in batches of 2 (3 batches per epoch), the LR drops after epoch 1, all
    randomness on (augmentation, iterative clicks with up to 3 passes, head dropout).
    """
    cfg: dict[str, Any] = {
        "model": {"name": TINY_MODEL, "overrides": tiny_model_overrides()},
        "data": {
            "kind": "folder",
            "data_root": str(data_root),
            "epoch_len": 6,
            "augment": {"variant": "cocolvis", "crop_size": [64, 64], "scale_range": [0.8, 1.2]},
            "min_object_area": 10,
            "keep_background_prob": 0.0,
            "stuff_prob": 0.0,
        },
        "clicks": {"max_num_points": 4, "merge_objects_prob": 0.0, "max_num_next_clicks": 3},
        "optim": {"name": "adam", "lr": 1.0e-3},
        "schedule": {"epochs": 4, "milestones": [1], "gamma": 0.5},
        "batch_size": 2,
        "grad_accum_steps": 1,
        "num_workers": 0,
        "seed": 3,
        "device": "cpu",
        "output_dir": str(output_dir),
        "checkpoint_interval": 1,
        "log_interval": 1,
        "max_steps": 0,
    }
    cfg.update(top)
    return cfg


@pytest.fixture(autouse=True)
def _one_thread(_seed_and_threads):
    """These models are tiny: one thread is faster, and robust to a busy machine (two OpenMP
    threads on a shared 2-core machine can be 10x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _tiny_model():
    return create_model(TINY_MODEL, **tiny_model_overrides())


def _square_batch(b: int = 2, size: int = 64):
    image = torch.rand(b, 3, size, size) * 0.3
    gt = torch.zeros(b, 1, size, size)
    gt[:, :, 16:48, 20:44] = 1
    image[:, :, 16:48, 20:44] += 0.6
    gt[:, :, 0:3, :] = -1  # an ignore band
    clicks = torch.full((b, 8, 3), -1.0)
    clicks[:, 0] = torch.tensor([32.0, 32.0, 1.0])
    return image, gt, clicks


# ------------------------------------------------------------------------------ pieces
def test_epoch_batches_are_deterministic_disjoint_shards():
    a = epoch_batches(23, 3, seed=1, epoch=0, rank=0, world_size=2)
    b = epoch_batches(23, 3, seed=1, epoch=0, rank=1, world_size=2)
    assert a == epoch_batches(23, 3, seed=1, epoch=0, rank=0, world_size=2)
    assert len(a) == len(b) == 3  # 11 items per rank -> 3 full batches
    flat_a, flat_b = sum(a, []), sum(b, [])
    assert not set(flat_a) & set(flat_b)
    assert len(set(flat_a)) == len(flat_a) and all(0 <= i < 23 for i in flat_a + flat_b)
    assert epoch_batches(23, 3, seed=1, epoch=1) != epoch_batches(23, 3, seed=1, epoch=0)
    assert epoch_batches(23, 3, seed=2, epoch=0) != epoch_batches(23, 3, seed=1, epoch=0)


def test_compact_clicks_keeps_the_logits():
    model = _tiny_model().eval()
    image, _, clicks = _square_batch()
    clicks[1, 4] = torch.tensor([10.0, 50.0, 0.0])  # a negative click in one sample only
    compact = compact_clicks(clicks)
    assert compact.shape[1] == 2
    with torch.no_grad():
        assert torch.equal(model(image, compact), model(image, clicks))
    assert compact_clicks(torch.full((2, 6, 3), -1.0)).shape == (2, 1, 3)


def test_batch_iou_ignores_label_minus_one():
    gt = torch.tensor([[[[1.0, 1.0, 0.0, -1.0]]], [[[0.0, 0.0, 0.0, 0.0]]]])
    logits = torch.tensor([[[[5.0, -5.0, -5.0, 5.0]]], [[[-5.0, -5.0, -5.0, -5.0]]]])
    iou = batch_iou(logits, gt)
    assert iou.tolist() == pytest.approx([0.5, 1.0])  # the ignored positive does not count


@pytest.mark.parametrize("max_next", [3, 0])
def test_iterative_forward_passes_and_clicks(max_next):
    model = _tiny_model().train()
    image, gt, clicks = _square_batch()
    calls = []
    model.register_forward_hook(
        lambda m, args, out: calls.append((torch.is_grad_enabled(), m.training, out.requires_grad, args[1].clone()))
    )
    # a generator whose first draw is num_iters == max_next
    seed = next(s for s in range(100) if np.random.default_rng(s).integers(0, max_next + 1) == max_next)
    out = iterative_forward(model, image, gt, clicks, np.random.default_rng(seed), max_num_next_clicks=max_next)
    assert out.num_iters == max_next
    assert len(calls) == max_next + 1
    for grad_on, training, req_grad, _ in calls[:-1]:  # the click-adding passes
        assert not grad_on and not training and not req_grad
    grad_on, training, req_grad, final_clicks = calls[-1]
    assert grad_on and training and req_grad and out.logits.requires_grad
    assert model.training
    n_valid = (out.clicks[..., 2] != -1).sum(dim=1)
    assert n_valid.tolist() == [1 + max_next] * 2  # one click per sample and pass (untrained model: errors)
    # the model got the same clicks, without the rows that are padding in the whole batch
    assert final_clicks.shape[1] <= out.clicks.shape[1]
    for b in range(2):
        rows = lambda c: sorted(map(tuple, c[b][c[b][:, 2] != -1].tolist()))  # noqa: E731
        assert rows(final_clicks) == rows(out.clicks)
    if max_next == 0:
        assert torch.equal(out.clicks, clicks) and torch.count_nonzero(out.prev_mask) == 0
    else:
        assert out.prev_mask.min() >= 0 and out.prev_mask.max() <= 1 and not out.prev_mask.requires_grad
        # the added clicks lie on the error regions of a binary target: never on ignore pixels
        added = out.clicks[(out.clicks[..., 2] != -1)][:, :2].long()
        assert (added[:, 0] >= 3).all()


# ------------------------------------------------------------------------------ overfitting
class _FixedItems:
    """One fixed synthetic batch, whatever the epoch."""

    def __init__(self, n: int = 2) -> None:
        image, gt, clicks = _square_batch(n)
        # the two samples differ: the second object is shifted
        image[1] = torch.roll(image[1], shifts=(5, -7), dims=(1, 2))
        gt[1] = torch.roll(gt[1], shifts=(5, -7), dims=(1, 2))
        gt[:, :, 0:3, :] = -1
        clicks[1, 0] = torch.tensor([37.0, 25.0, 1.0])
        self.items = [{"image": image[i], "gt": gt[i], "clicks": clicks[i]} for i in range(n)]

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        pass

    def __getitem__(self, i):
        return self.items[i]


def test_overfits_one_batch(tmp_path):
    cfg = config_from_dict(tiny_config_dict(
        tmp_path / "unused", tmp_path / "run", max_steps=120, log_interval=10, checkpoint_interval=1000,
        optim={"name": "adam", "lr": 3e-3}, schedule={"epochs": 1000, "milestones": [], "gamma": 0.1},
        clicks={"max_num_points": 4, "max_num_next_clicks": 1},
    ))  # fmt: skip
    data = _FixedItems(2)
    trainer = Trainer(cfg, dataset=data, quiet=True)
    with torch.no_grad():
        image = torch.stack([it["image"] for it in data.items])
        gt = torch.stack([it["gt"] for it in data.items])
        clicks = torch.stack([it["clicks"] for it in data.items])
        before = batch_iou(trainer.model.eval()(image, clicks), gt).mean().item()
    summary = trainer.fit()
    assert summary["steps"] == 120
    assert summary["final_iou_mean"] > 0.9, summary
    assert summary["final_loss_mean"] < summary["first_loss"]
    with torch.no_grad():
        after = batch_iou(trainer.model.eval()(image, clicks), gt).mean().item()
    assert before < 0.7 and after > 0.9, (before, after)


# ------------------------------------------------------------------------------ resume
def _flat_state(obj, prefix=""):
    """Flatten nested dicts/lists into (key, value) pairs for exact comparison."""
    if isinstance(obj, dict):
        for k in sorted(obj, key=str):
            yield from _flat_state(obj[k], f"{prefix}/{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _flat_state(v, f"{prefix}[{i}]")
    else:
        yield prefix, obj


def _assert_same(a, b, what):
    fa, fb = dict(_flat_state(a)), dict(_flat_state(b))
    assert fa.keys() == fb.keys(), what
    for k in fa:
        va, vb = fa[k], fb[k]
        if isinstance(va, torch.Tensor):
            assert isinstance(vb, torch.Tensor) and va.dtype == vb.dtype and torch.equal(va, vb), f"{what}{k} differs"
        else:
            assert va == vb, f"{what}{k}: {va!r} != {vb!r}"


@pytest.mark.parametrize("accum, split", [(1, 2), (2, 3)])
def test_resume_is_bit_exact(tmp_path, accum, split):
    """4 optimiser steps in one go == `split` steps, a new process-like Trainer resuming, the rest.

    3 batches per epoch and the LR drops after epoch 1. accum=1: the split falls mid-epoch
    (batch 2 of 3) and step 4 is in epoch 1; accum=2 (steps of 2 + 1 batches): the split falls
    mid-epoch 1, and the run ends mid-epoch 2.
    """
    data = make_folder_dataset(tmp_path / "data")
    one, two = tmp_path / "one_go", tmp_path / "split"

    def cfg(out, max_steps):
        return config_from_dict(tiny_config_dict(data, out, max_steps=max_steps, grad_accum_steps=accum))

    Trainer(cfg(one, 4), quiet=True).fit()
    first = Trainer(cfg(two, split), quiet=True).fit()
    mid = load_training_state(two / STATE_FILE)
    assert first["steps"] == split and mid["train_state"]["batch_in_epoch"] not in (0, 3)  # really mid-epoch
    resumed = Trainer(cfg(two, 4), quiet=True, resume=True)
    assert resumed.state.step == split
    summary = resumed.fit()
    assert summary["steps"] == 4 and summary["resumed_from_step"] == split

    a, b = load_training_state(one / STATE_FILE), load_training_state(two / STATE_FILE)
    for key in ("model", "optimizer", "scheduler", "train_state"):
        if key == "train_state":
            for t in (a, b):
                t[key].pop("train_time_s")
        _assert_same(a[key], b[key], key)
    assert a["scheduler"]["last_epoch"] >= 1  # the run crossed an epoch boundary (LR schedule stepped)
    # the states of the split run after `split` steps and after 4 steps differ (the test can fail)
    assert any(not torch.equal(mid["model"][k], b["model"][k]) for k in b["model"])
    # the final weights files agree too
    from safetensors.torch import load_file

    wa, wb = load_file(str(one / "model.safetensors")), load_file(str(two / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    # and the step-wise metrics were continued, not restarted
    rows = (two / "dvclive" / "plots" / "metrics" / "train" / "loss.tsv").read_text().strip().splitlines()
    assert rows[0].split("\t") == ["step", "loss"]
    assert [r.split("\t")[0] for r in rows[1:]] == ["1", "2", "3", "4"]


def test_checkpoint_is_plain_and_loads_weights_only(tmp_path):
    data = make_folder_dataset(tmp_path / "data", n=3)
    cfg = config_from_dict(tiny_config_dict(data, tmp_path / "run", max_steps=1, clicks={"max_num_next_clicks": 0}))
    Trainer(cfg, quiet=True).fit()
    st = torch.load(tmp_path / "run" / STATE_FILE, map_location="cpu", weights_only=True)
    assert st["train_state"]["step"] == 1 and st["train_state"]["batch_in_epoch"] == 1
    assert {"torch", "cuda", "numpy", "python"} <= set(st["rng"][0])
    assert not list((tmp_path / "run").rglob("*.tmp*"))


# ------------------------------------------------------------------------------ input errors
def test_missing_data_root_fails_before_training(tmp_path):
    cfg = config_from_dict(tiny_config_dict(tmp_path / "nowhere", tmp_path / "run"))
    with pytest.raises(FileNotFoundError, match="data.data_root.*nowhere"):
        Trainer(cfg, quiet=True)
    assert not (tmp_path / "run").exists()


def test_missing_pretrained_backbone_says_where_to_put_it(tmp_path):
    data = make_folder_dataset(tmp_path / "data", n=2)
    d = tiny_config_dict(data, tmp_path / "run")
    d["model"]["pretrained_backbone"] = str(tmp_path / "weights" / "mae_pretrain_vit_base.pth")
    with pytest.raises(FileNotFoundError) as e:
        Trainer(config_from_dict(d), quiet=True)
    msg = str(e.value)
    assert "mae_pretrain_vit_base.pth" in msg and "data/README.md" in msg and "MAE" in msg.upper()
    assert not (tmp_path / "run").exists()


def test_same_seed_same_initial_weights(tmp_path):
    data = make_folder_dataset(tmp_path / "data", n=2)
    a = Trainer(config_from_dict(tiny_config_dict(data, tmp_path / "a")), quiet=True).model.state_dict()
    torch.manual_seed(12345)  # whatever ran before
    b = Trainer(config_from_dict(tiny_config_dict(data, tmp_path / "b")), quiet=True).model.state_dict()
    c = Trainer(config_from_dict(tiny_config_dict(data, tmp_path / "c", seed=4)), quiet=True).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


# ------------------------------------------------------------------------------ DDP (gloo, CPU)
# Two processes as torchrun starts them (RANK/WORLD_SIZE/LOCAL_RANK/MASTER_*), 2 steps each;
# about 10-20 s on 2 cores (process start-up and imports dominate).
_DDP_WORKER = r"""
import json, sys, torch
sys.path.insert(0, {tests!r})
from icmformer.training.config import config_from_dict
from icmformer.training.trainer import Trainer, dist_info_from_env
from test_trainer import tiny_config_dict
info = dist_info_from_env()
out = {out0!r} if info.rank == 0 else {out1!r}
torch.set_num_threads(1)
trainer = Trainer(config_from_dict(tiny_config_dict({data!r}, out, max_steps=2)), quiet=True)
trainer.fit()
torch.save({{k: v for k, v in trainer.model.state_dict().items()}}, {params!r}.format(info.rank))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(300)
def test_ddp_two_processes_gloo(tmp_path):
    data = make_folder_dataset(tmp_path / "data", n=4)
    out0, out1 = tmp_path / "out", tmp_path / "rank1_out"
    script = tmp_path / "worker.py"
    script.write_text(_DDP_WORKER.format(
        tests=str(Path(__file__).parent), out0=str(out0), out1=str(out1), data=str(data),
        params=str(tmp_path / "params{}.pt"),
    ))  # fmt: skip
    port = _free_port()
    procs = []
    for rank in range(2):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port), OMP_NUM_THREADS="1")  # fmt: skip
        procs.append(subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    try:
        outs = [p.communicate(timeout=240)[0].decode() for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert all(p.returncode == 0 for p in procs), "\n".join(outs)
    p0 = torch.load(tmp_path / "params0.pt", weights_only=True)
    p1 = torch.load(tmp_path / "params1.pt", weights_only=True)
    assert p0.keys() == p1.keys() and all(torch.equal(p0[k], p1[k]) for k in p0)
    # rank 0 wrote everything; rank 1 (pointed at another folder) wrote nothing
    assert (out0 / "model.safetensors").is_file() and (out0 / STATE_FILE).is_file()
    assert (out0 / "config.yaml").is_file() and (out0 / "dvclive" / "metrics.json").is_file()
    assert not out1.exists()
    summary = json.loads((out0 / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 2 and summary["effective_batch_size"] == 4
    st = load_training_state(out0 / STATE_FILE)
    assert len(st["rng"]) == 2 and st["world_size"] == 2
    # the weights moved: different from the common initialisation
    init = Trainer(config_from_dict(tiny_config_dict(data, tmp_path / "init")), quiet=True).model.state_dict()
    assert any(not torch.equal(init[k], p0[k]) for k in p0)


def test_resume_takes_true_false_or_if_exists(tmp_path):
    """``resume="if_exists"`` starts a run where there is no state (``True`` fails there, see
    test_cli_errors); any other value is refused, naming it."""
    data = make_folder_dataset(tmp_path / "data", n=4)
    cfg = config_from_dict(tiny_config_dict(data, tmp_path / "out", max_steps=1))
    assert Trainer(cfg, resume="if_exists", progress=False, quiet=True).state.step == 0
    with pytest.raises(ValueError, match="'yes'"):
        Trainer(cfg, resume="yes", progress=False, quiet=True)
