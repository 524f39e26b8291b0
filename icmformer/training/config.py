"""The training configuration: typed dataclasses, YAML files and ``key=value`` overrides.

A run is described by one :class:`TrainConfig` (sections ``model``, ``data``, ``clicks``,
``loss``, ``optim``, ``schedule`` and top-level run settings). Configs live in ``configs/*.yaml``
and are loaded with :func:`load_config`, which merges, in order:

1. the schema defaults (the official hyper-parameters where they exist, ``OFFICIAL.md``
   "Training"),
2. the YAML file,
3. command-line style overrides ``"section.key=value"`` (values parsed as YAML, e.g.
   ``data.augment.crop_size=[224,224]``, ``model.overrides.embed_dim=64``).

Unknown keys and values of the wrong type raise ``ValueError`` naming the key (and the file);
semantic checks (known dataset kind, sorted milestones, ...) run in :meth:`TrainConfig.validate`.
:func:`save_config` writes the fully resolved config (every key, interpolations resolved) next
to a run's outputs, and loading that file gives back an equal config.

Model overrides (``model.overrides``) are free-form: they are passed to
``icmformer.create_model(name, **overrides)``, which validates them.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from icmformer.data.augment import AugmentConfig
from icmformer.data.train_datasets import DATASET_KINDS
from icmformer.training.iterative import NEXT_CLICK_MODES

SCHEDULES = ("multistep", "cosine")
OPTIMIZERS = ("adam", "adamw")


@dataclass
class ModelSection:
    """``name``: a registry name; ``overrides``: ``ICMFormerConfig`` fields; ``pretrained_backbone``:
    MAE / ImageNet weights file; ``checkpoint``: initial weights (our ``.safetensors`` or official)."""

    name: str = "icmformer_vit_base_448"
    overrides: dict[str, Any] = field(default_factory=dict)
    pretrained_backbone: str | None = None
    checkpoint: str | None = None


@dataclass
class SourceSection:
    """One source of a ``kind: mixed`` dataset: ``kind`` (``sbd`` | ``cocolvis`` | ``folder``),
    ``data_root``, ``split`` and ``weight`` (share of the items drawn from it)."""

    kind: str = "sbd"
    data_root: str = ""
    split: str = "train"
    weight: float = 1.0


@dataclass
class DataSection:
    """Training data.

    ``kind``: ``sbd`` | ``cocolvis`` | ``folder`` (evaluation-style ``img/`` + ``gt/``);
    ``data_root``: the dataset folder (relative paths are taken from the working directory);
    ``epoch_len``: items per epoch (``<= 0``: one per image); ``augment``: see
    :class:`icmformer.data.augment.AugmentConfig`; ``sources``: the datasets of ``kind: mixed``
    (each with its own kind, root, split and weight; ``data_root``/``split`` are then unused); the
    rest are RITM's dataset settings.
    """

    kind: str = "cocolvis"
    data_root: str = ""
    split: str = "train"
    epoch_len: int = 30000
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    min_object_area: int = 1000
    keep_background_prob: float = 0.05
    stuff_prob: float = 0.30
    buggy_mask_thresh: float = 0.08
    samples_scores_path: str | None = None
    samples_scores_gamma: float = 1.25
    sources: list[SourceSection] = field(default_factory=list)


@dataclass
class ClicksSection:
    """Click simulation: the points sampler (RITM ``MultiPointSampler``) and iterative training."""

    max_num_points: int = 24
    prob_gamma: float = 0.80
    expand_ratio: float = 0.1
    positive_erode_prob: float = 0.9
    positive_erode_iters: int = 3
    negative_bg_prob: float = 0.1
    negative_other_prob: float = 0.4
    negative_border_prob: float = 0.5
    merge_objects_prob: float = 0.15
    max_num_merged_objects: int = 2
    first_click_center: bool = False
    #: probability that a sample keeps only its first positive click (the evaluation's start: one
    #: click, no negatives), so that iterative passes follow the evaluation's click sequence
    single_click_prob: float = 0.0
    max_num_next_clicks: int = 3
    next_click_mode: str = "official"
    next_click_center_prob: float = 0.5
    pred_thresh: float = 0.49


@dataclass
class ZoomSection:
    """Zoom-in aware training (:mod:`icmformer.training.zoom`; not in the official recipe).

    ``enabled``: the training crop (``data.augment.crop_size``) is a canvas; the network sees views
    of it resized to ``input_size`` (``0`` = the model's input size): the whole canvas, or for a
    fraction ``prob`` of the samples the evaluation's zoom-in ROI (``min_crop_size`` in canvas px).
    ``input_sizes`` (with ``input_size_probs``, same length, summing to 1): draw the view size per
    batch from these instead (e.g. ``[224, 320, 480]``, the sizes the evaluation feeds the
    network); empty = always ``input_size``, with no draw, so older runs' RNG is unchanged.
    """

    enabled: bool = False
    prob: float = 0.5
    min_crop_size: float = 180.0
    input_size: int = 0
    input_sizes: list[int] = field(default_factory=list)
    input_size_probs: list[float] = field(default_factory=list)


@dataclass
class ValSection:
    """Validation during training: NoC / mIoU per click on a held-out split with the evaluation
    protocol (zoom-in, no flip), every ``every_steps`` optimiser steps (``0`` = off) and at the end,
    on at most ``max_instances`` instances; results go to ``<output_dir>/val.jsonl``. ``batch_size``
    > 1 advances that many instances per forward pass (the batched evaluator: the same rows, less
    wall time)."""

    every_steps: int = 0
    kind: str = "sbd"
    data_root: str = ""
    split: str = "val"
    max_instances: int = 60
    max_clicks: int = 20
    batch_size: int = 1


@dataclass
class LossSection:
    """Normalized focal loss parameters (official alpha 0.5, gamma 2)."""

    alpha: float = 0.5
    gamma: float = 2.0


@dataclass
class OptimSection:
    """Optimiser (official: Adam, lr 5e-5, betas (0.9, 0.999), eps 1e-8, no weight decay);
    ``clip_grad_norm > 0`` clips the global gradient norm (not in the official recipe)."""

    name: str = "adam"
    lr: float = 5e-5
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.0
    clip_grad_norm: float = 0.0


@dataclass
class ScheduleSection:
    """``kind: multistep``: ``MultiStepLR`` stepped per epoch (official COCO+LVIS: 85 epochs,
    milestones [80, 85]). ``kind: cosine``: per optimiser step, linear warm-up over
    ``warmup_steps`` then a cosine from ``lr`` to ``lr * min_lr_ratio`` at the end of the last
    epoch (``max_steps`` only stops a run early; it does not change the schedule)."""

    epochs: int = 85
    milestones: list[int] = field(default_factory=lambda: [80, 85])
    gamma: float = 0.1
    kind: str = "multistep"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.01


@dataclass
class TrainConfig:
    """One training run.

    Run settings: ``batch_size`` (official total 24), ``grad_accum_steps`` (optimiser step every
    N batches), ``bf16`` (autocast), ``num_workers`` (DataLoader), ``seed`` (datasets, click
    sampling and init), ``device`` (``auto`` = CUDA when available), ``output_dir``,
    ``checkpoint_interval`` (epochs between checkpoints), ``log_interval`` (iterations between
    log lines), ``max_steps`` (stop after this many optimiser steps, ``0`` = no limit; for demos).
    """

    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    clicks: ClicksSection = field(default_factory=ClicksSection)
    loss: LossSection = field(default_factory=LossSection)
    optim: OptimSection = field(default_factory=OptimSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    zoom: ZoomSection = field(default_factory=ZoomSection)
    val: ValSection = field(default_factory=ValSection)
    batch_size: int = 24
    grad_accum_steps: int = 1
    bf16: bool = False
    num_workers: int = 4
    seed: int = 0
    device: str = "auto"
    output_dir: str = "results/runs/default"
    checkpoint_interval: int = 1
    log_interval: int = 50
    max_steps: int = 0

    def validate(self) -> "TrainConfig":
        """Semantic checks; raise ``ValueError`` naming the key."""

        def need(ok: bool, key: str, msg: str) -> None:
            if not ok:
                raise ValueError(f"config key {key}: {msg}")

        d, c, o, s = self.data, self.clicks, self.optim, self.schedule
        need(bool(self.model.name), "model.name", "must name a registered model")
        need(d.kind in DATASET_KINDS, "data.kind", f"must be one of {DATASET_KINDS}, got {d.kind!r}")
        try:
            d.augment.validate()
        except ValueError as e:
            raise ValueError(f"config key data.augment: {e}") from None
        if d.kind == "mixed":
            need(len(d.sources) > 0, "data.sources", "kind: mixed needs at least one source")
            for i, src in enumerate(d.sources):
                need(src.kind in DATASET_KINDS[:3], f"data.sources[{i}].kind", f"must be one of {DATASET_KINDS[:3]}, got {src.kind!r}")
                need(bool(src.data_root), f"data.sources[{i}].data_root", "must name the dataset folder")
                need(src.weight > 0, f"data.sources[{i}].weight", "must be > 0")
        need(d.min_object_area >= 0, "data.min_object_area", "must be >= 0")
        need(d.keep_background_prob <= 1.0, "data.keep_background_prob", "must be <= 1 (< 0 keeps every crop)")
        need(0.0 <= d.stuff_prob <= 1.0, "data.stuff_prob", "must be in [0, 1]")
        need(c.max_num_points >= 1, "clicks.max_num_points", "must be >= 1")
        need(0.0 < c.prob_gamma <= 1.0, "clicks.prob_gamma", "must be in (0, 1]")
        need(
            abs(c.negative_bg_prob + c.negative_other_prob + c.negative_border_prob - 1.0) < 1e-6,
            "clicks.negative_*_prob", "negative_bg_prob + negative_other_prob + negative_border_prob must be 1",
        )
        need(0.0 <= c.merge_objects_prob <= 1.0, "clicks.merge_objects_prob", "must be in [0, 1]")
        need(c.max_num_next_clicks >= 0, "clicks.max_num_next_clicks", "must be >= 0")
        need(0.0 <= c.single_click_prob <= 1.0, "clicks.single_click_prob", f"must be in [0, 1], got {c.single_click_prob}")
        need(c.next_click_mode in NEXT_CLICK_MODES, "clicks.next_click_mode", f"must be one of {NEXT_CLICK_MODES}")
        need(0.0 <= c.next_click_center_prob <= 1.0, "clicks.next_click_center_prob", "must be in [0, 1]")
        need(o.name in OPTIMIZERS, "optim.name", f"must be one of {OPTIMIZERS}, got {o.name!r}")
        need(o.lr > 0, "optim.lr", "must be > 0")
        need(o.weight_decay >= 0, "optim.weight_decay", f"must be >= 0, got {o.weight_decay}")
        need(len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas), "optim.betas", "must be two values in [0, 1)")
        need(s.epochs >= 1, "schedule.epochs", "must be >= 1")
        need(s.kind in SCHEDULES, "schedule.kind", f"must be one of {SCHEDULES}, got {s.kind!r}")
        need(s.warmup_steps >= 0, "schedule.warmup_steps", "must be >= 0")
        need(0.0 <= s.min_lr_ratio <= 1.0, "schedule.min_lr_ratio", "must be in [0, 1]")
        need(o.clip_grad_norm >= 0, "optim.clip_grad_norm", "must be >= 0 (0 = off)")
        need(0.0 <= self.zoom.prob <= 1.0, "zoom.prob", "must be in [0, 1]")
        need(self.zoom.min_crop_size > 0, "zoom.min_crop_size", "must be > 0")
        need(self.zoom.input_size >= 0, "zoom.input_size", "must be >= 0 (0 = the model's input size)")
        zs, zp = list(self.zoom.input_sizes), list(self.zoom.input_size_probs)
        need(all(int(t) >= 16 for t in zs), "zoom.input_sizes", f"must be sizes >= 16 px, got {zs}")
        need(len(zp) == len(zs), "zoom.input_size_probs", f"must give one probability per zoom.input_sizes entry, got {zp} for {zs}")
        need(not zp or (min(zp) >= 0 and abs(sum(zp) - 1.0) < 1e-6), "zoom.input_size_probs", f"must be >= 0 and sum to 1, got {zp}")
        need(self.val.every_steps >= 0, "val.every_steps", "must be >= 0 (0 = off)")
        need(self.val.every_steps == 0 or bool(self.val.data_root), "val.data_root", "must name the validation set")
        need(self.val.max_instances >= 1 and self.val.max_clicks >= 1, "val.max_instances", "max_instances and max_clicks must be >= 1")
        need(self.val.batch_size >= 1, "val.batch_size", f"must be >= 1, got {self.val.batch_size}")
        need(list(s.milestones) == sorted(s.milestones), "schedule.milestones", "must be sorted")
        need(0 < s.gamma <= 1, "schedule.gamma", "must be in (0, 1]")
        need(self.batch_size >= 1, "batch_size", "must be >= 1")
        need(self.grad_accum_steps >= 1, "grad_accum_steps", "must be >= 1")
        need(self.num_workers >= 0, "num_workers", "must be >= 0")
        need(self.checkpoint_interval >= 1, "checkpoint_interval", "must be >= 1")
        need(self.log_interval >= 1, "log_interval", "must be >= 1")
        need(self.max_steps >= 0, "max_steps", "must be >= 0")
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML/JSON-ready)."""
        return dataclasses.asdict(self)


def _error_message(e: OmegaConfBaseException, source: str) -> str:
    key = getattr(e, "full_key", None) or getattr(e, "key", None)
    first = str(e).splitlines()[0] if str(e) else type(e).__name__
    where = f"config key {key!r}" if key else "config"
    return f"{source}: {where}: {first}"


def _parse_overrides(overrides: list[str]) -> Any:
    for ov in overrides:
        if "=" not in ov or not ov.split("=", 1)[0].strip():
            raise ValueError(f"override {ov!r} must have the form section.key=value")
    try:
        return OmegaConf.from_dotlist(list(overrides))
    except OmegaConfBaseException as e:
        raise ValueError(_error_message(e, "overrides")) from None


def config_from_dict(values: dict[str, Any] | None, overrides: list[str] | None = None, source: str = "config") -> TrainConfig:
    """Build a validated :class:`TrainConfig` from nested values and overrides."""
    schema = OmegaConf.structured(TrainConfig)
    try:
        merged = OmegaConf.merge(schema, values or {})
    except OmegaConfBaseException as e:
        raise ValueError(_error_message(e, source)) from None
    if overrides:
        parsed = _parse_overrides(overrides)
        try:
            merged = OmegaConf.merge(merged, parsed)
        except OmegaConfBaseException as e:
            raise ValueError(_error_message(e, "overrides")) from None
    try:
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        raise ValueError(_error_message(e, source)) from None
    assert isinstance(cfg, TrainConfig)
    return cfg.validate()


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    """Load a YAML config (``None``: the schema defaults) and apply ``key=value`` overrides.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: unknown key, wrong type or invalid value; the message names the key and file.
    """
    values = None
    source = "defaults"
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: config file not found")
        source = str(path)
        try:
            loaded = OmegaConf.load(path)
        except Exception as e:  # YAML syntax errors
            raise ValueError(f"{path}: cannot parse YAML ({e})") from None
        if not OmegaConf.is_dict(loaded):
            raise ValueError(f"{path}: expected a mapping at the top level")
        values = loaded
    return config_from_dict(values, overrides, source)


def config_to_yaml(cfg: TrainConfig) -> str:
    """The resolved config as YAML text."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg), resolve=True)


def save_config(cfg: TrainConfig, path: str | Path) -> Path:
    """Write the resolved config (every key) to ``path`` (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(config_to_yaml(cfg))
    return path
