"""Training config: YAML loading, overrides, errors, save/reload."""
from __future__ import annotations

from pathlib import Path

import pytest

from icmformer.training.config import TrainConfig, config_to_yaml, load_config, save_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "cfg.yaml"
    p.write_text(text)
    return p


def test_defaults_are_the_official_hyper_parameters():
    cfg = load_config(None)
    assert isinstance(cfg, TrainConfig)
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.betas, cfg.optim.eps, cfg.optim.weight_decay) == (
        "adam", 5e-5, [0.9, 0.999], 1e-8, 0.0)
    assert (cfg.schedule.milestones, cfg.schedule.gamma) == ([80, 85], 0.1)
    assert (cfg.clicks.max_num_points, cfg.clicks.prob_gamma, cfg.clicks.merge_objects_prob) == (24, 0.8, 0.15)
    assert cfg.clicks.max_num_next_clicks == 3 and cfg.loss.alpha == 0.5 and cfg.loss.gamma == 2.0


def test_yaml_and_overrides(tmp_path):
    p = write(tmp_path, """
model:
  name: icmformer_vit_base_448
  overrides: {embed_dim: 64, depth: 4}
data:
  kind: folder
  data_root: somewhere
  augment: {variant: paper, crop_size: [224, 224]}
batch_size: 8
output_dir: out/${model.name}
""")
    cfg = load_config(p, ["batch_size=2", "model.overrides.num_heads=2", "data.augment.scale_range=[0.8,1.2]",
                          "clicks.next_click_mode=center_border"])
    assert cfg.batch_size == 2
    assert cfg.model.overrides == {"embed_dim": 64, "depth": 4, "num_heads": 2}
    assert cfg.data.kind == "folder" and cfg.data.augment.variant == "paper"
    assert cfg.data.augment.crop_size == [224, 224] and cfg.data.augment.scale_range == [0.8, 1.2]
    assert cfg.clicks.next_click_mode == "center_border"
    assert cfg.output_dir == "out/icmformer_vit_base_448"  # interpolation resolved


@pytest.mark.parametrize(
    "text, overrides, key",
    [
        ("data:\n  kindd: sbd\n", [], "kindd"),
        ("", ["optim.momentum=0.9"], "momentum"),
        ("batch_size: many\n", [], "batch_size"),
        ("", ["schedule.milestones=[a,b]"], "schedule.milestones"),
        ("", ["data.augment.crop_size=big"], "crop_size"),
        ("", ["data.kind=imagenet"], "data.kind"),
        ("", ["schedule.milestones=[85,80]"], "schedule.milestones"),
        ("", ["clicks.next_click_mode=random"], "clicks.next_click_mode"),
        ("", ["data.augment.variant=fancy"], "data.augment"),
        ("", ["batch_size"], "batch_size"),
        ("", ["val.batch_size=0"], "val.batch_size"),
    ],
)
def test_errors_name_the_key(tmp_path, text, overrides, key):
    p = write(tmp_path, text or "seed: 0\n")
    with pytest.raises(ValueError) as exc:
        load_config(p, overrides)
    assert key in str(exc.value)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_save_and_reload_equal(tmp_path):
    cfg = load_config(CONFIGS / "demo.yaml", ["seed=3", "model.overrides.depth=2"])
    out = save_config(cfg, tmp_path / "run" / "config.yaml")
    text = out.read_text()
    assert "milestones" in text and "${" not in text
    again = load_config(out)
    assert again == cfg
    assert config_to_yaml(again) == text


@pytest.mark.parametrize("name", ["demo", "paper_vit_base_448_sbd", "paper_vit_base_448_cocolvis",
                                  "paper_swin_base_384_cocolvis", "paper_swin_small_224_cocolvis"])
def test_shipped_configs_load(name):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    if name.startswith("paper"):
        assert cfg.batch_size == 24 and cfg.optim.lr == 5e-5 and cfg.data.epoch_len == 30000
        crop = {"vit_base_448": 448, "swin_base_384": 384, "swin_small_224": 224}
        assert cfg.data.augment.crop_size == [crop[next(k for k in crop if k in name)]] * 2
    if name.endswith("sbd"):
        assert (cfg.schedule.epochs, cfg.schedule.milestones) == (55, [50, 55])
        assert (cfg.data.kind, cfg.data.min_object_area, cfg.data.keep_background_prob) == ("sbd", 80, 0.01)
        assert cfg.data.augment.variant == "sbd"
    if name.endswith("cocolvis"):
        assert (cfg.schedule.epochs, cfg.schedule.milestones) == (85, [80, 85])
        assert (cfg.data.min_object_area, cfg.data.keep_background_prob, cfg.data.stuff_prob) == (1000, 0.05, 0.30)
        expected = [0.75, 1.40] if "vit" in name else [0.75, 1.25]
        assert cfg.data.augment.scale_range == expected
