"""The paper configs (configs/paper_*.yaml) carry the paper's and the official code's training numbers.

The numbers are read from icmformer/reference/paper.yaml (training_facts) and, where the project
reference files are present, from ../shared/reference/PAPER_TABLES.md and OFFICIAL.md themselves,
so a drift in either the configs or the reference is caught.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from icmformer import reference
from icmformer.training.config import load_config

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("paper_*.yaml"))
CROP = {"icmformer_vit_base_448": 448, "icmformer_swin_base_384": 384, "icmformer_swin_small_224": 224}


def _reference_text(name: str) -> str:
    env = os.environ.get("ICMFORMER_SHARED_REFERENCE")
    for folder in ([Path(env)] if env else []) + [REPO.parent / "shared" / "reference"]:
        if (folder / name).is_file():
            return (folder / name).read_text()
    pytest.skip(f"{name} not found: set ICMFORMER_SHARED_REFERENCE or place it at ../shared/reference")


def _train_set(cfg) -> str:
    return {"sbd": "SBD", "cocolvis": "COCO+LVIS"}[cfg.data.kind]


def test_every_paper_model_and_training_set_has_a_config():
    names = {p.stem for p in CONFIGS}
    assert {"paper_vit_base_448_sbd", "paper_vit_base_448_cocolvis", "paper_swin_base_384_sbd",
            "paper_swin_base_384_cocolvis", "paper_swin_small_224_cocolvis", "paper_swin_small_224_sbd"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_paper_config_matches_the_paper_and_the_official_code(path):
    facts = reference.load_paper_numbers()["source"]["training_facts"]
    cfg = load_config(path)
    train = _train_set(cfg)
    assert cfg.optim.name == "adam" and cfg.optim.lr == facts["lr"] == 5e-5
    assert cfg.batch_size * cfg.grad_accum_steps == facts["batch_size"] == 24
    assert cfg.schedule.epochs == facts["epochs"][train]
    assert list(cfg.schedule.milestones) == facts["milestones_official"][train] and cfg.schedule.gamma == 0.1
    assert list(cfg.optim.betas) == [0.9, 0.999]  # the official code (the paper's text says 0.99)
    assert cfg.optim.eps == 1e-8 and cfg.optim.weight_decay == 0.0
    assert (cfg.loss.alpha, cfg.loss.gamma) == (0.5, 2.0)
    assert cfg.clicks.max_num_points == 24 and cfg.clicks.max_num_next_clicks == 3
    assert list(cfg.data.augment.crop_size) == [CROP[cfg.model.name]] * 2
    assert cfg.bf16 is True and cfg.model.pretrained_backbone
    if cfg.data.kind == "sbd":
        assert (cfg.data.min_object_area, cfg.data.keep_background_prob) == (80, 0.01)
    else:
        assert (cfg.data.min_object_area, cfg.data.keep_background_prob, cfg.data.stuff_prob) == (1000, 0.05, 0.30)


def test_training_facts_match_the_reference_texts():
    facts = reference.load_paper_numbers()["source"]["training_facts"]
    paper = _reference_text("PAPER_TABLES.md")
    m = re.search(r"batch (\d+), initial\s+learning rate ([0-9.e-]+), divided by 10 after epoch (\d+); (\d+) epochs on SBD, (\d+) on COCO\+LVIS", paper)
    assert m, "PAPER_TABLES.md: training facts sentence not found"
    assert int(m.group(1)) == facts["batch_size"] and float(m.group(2)) == facts["lr"]
    assert facts["epochs"] == {"SBD": int(m.group(4)), "COCO+LVIS": int(m.group(5))}
    assert facts["milestones_official"]["SBD"][0] == int(m.group(3))
    official = _reference_text("OFFICIAL.md")
    assert re.search(r"Adam with lr 5e-5, betas \(0\.9, 0\.999\), eps 1e-8 and no weight decay", official)
    cl = re.search(r"COCO\+LVIS: milestones \[(\d+), (\d+)\], gamma 0\.1, \*\*(\d+) epochs\*\*", official)
    sbd = re.search(r"SBD: milestones \[(\d+), (\d+)\], \*\*(\d+) epochs\*\*", official)
    assert cl and sbd
    assert facts["milestones_official"]["COCO+LVIS"] == [int(cl.group(1)), int(cl.group(2))] and facts["epochs"]["COCO+LVIS"] == int(cl.group(3))
    assert facts["milestones_official"]["SBD"] == [int(sbd.group(1)), int(sbd.group(2))] and facts["epochs"]["SBD"] == int(sbd.group(3))
    assert re.search(r"--batch-size=24 --ngpus=2", official)
