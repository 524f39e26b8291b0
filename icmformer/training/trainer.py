"""The trainer: iterative click training with the normalized focal loss (``icmformer train``).

One iteration follows the official ``ISTrainer.batch_forward`` (``OFFICIAL.md`` "Iterative
training"):

1. ``num_iters = sample_num_iters(rng, clicks.max_num_next_clicks)`` (uniform in ``0..3``);
2. ``num_iters`` forward passes under ``torch.no_grad()`` with the model in ``eval()``, starting
   from a zero previous mask; after each, ``prev = sigmoid(logits)`` and one click per sample is
   added from the error regions (:func:`~icmformer.training.iterative.add_next_clicks`);
3. the final forward pass with gradients, model in ``train()``, on the last ``prev``;
4. loss = normalized focal loss (``loss.alpha``/``loss.gamma``) against the ground truth
   (``-1`` ignored), averaged over the batch.

Optimiser Adam/AdamW (``optim``), ``MultiStepLR`` stepped once per epoch (``schedule``), gradient
accumulation over ``grad_accum_steps`` batches (the optimiser steps at the end of every group and
at the end of an epoch), ``bf16`` autocast, ``max_steps`` (optimiser steps) as a hard limit.

Data order and randomness (what makes ``--resume`` exact)
    * The items of epoch ``e`` are a permutation of ``range(len(dataset))`` drawn from
      ``(seed, e)``; rank ``r`` of ``W`` takes the ``r``-th of ``W`` equal, disjoint slices and
      cuts it into batches of ``batch_size`` (an incomplete last batch is dropped, so every rank
      runs the same number of steps). An item is a function of ``(seed, epoch, index)`` only
      (:mod:`icmformer.data.train_datasets`).
    * Every batch ``b`` of epoch ``e`` on rank ``r`` gets its own click generator
      ``numpy.random.default_rng([seed, ., e, b, r])`` (``num_iters`` and the added clicks) and
      re-seeds torch (dropout, drop-path) from the same key. The randomness of a batch therefore
      depends only on its position, not on what ran before in the process.
    * The training state (``<output_dir>/checkpoints/last.pt``) stores the model, optimiser and
      scheduler states, ``epoch``, ``batch_in_epoch`` (batches of the epoch already consumed),
      ``step`` and the RNG states of every rank (torch CPU/CUDA, numpy's global state, Python
      ``random``), written atomically (temporary file + rename) with ``torch.save`` of tensors and
      plain containers, and read with ``torch.load(weights_only=True)``. Checkpoints are only
      taken between optimiser steps (never with accumulated gradients pending), so a resumed run
      continues bit for bit (on CPU; CUDA kernels may be non-deterministic).

When a checkpoint is written
    every ``checkpoint_interval`` epochs, every ``save_every_steps`` optimiser steps (a trainer
    option), when ``max_steps`` stops the run (possibly mid-epoch) and at the end. The final
    weights go to ``<output_dir>/model.safetensors`` (our format, ``icmformer.load_checkpoint``)
    and a ``train_summary.json`` is written next to them whenever the run stops.

Multi-GPU: launch with ``torchrun --nproc_per_node N -m icmformer.cli train ...``; the trainer
reads ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``, uses NCCL on CUDA and gloo on CPU, wraps the model in
``DistributedDataParallel``, and only rank 0 logs and writes files. Without those variables it
runs as one process.

Metrics go to DVCLive (``<output_dir>/dvclive``: ``train/loss``, ``train/iou``, ``train/lr`` per
optimiser step) with ``save_dvc_exp=False`` and ``dvcyaml=None``, so it works inside a DVC
pipeline stage and outside one without touching git or ``dvc.yaml``.

This module holds the loop (:class:`Trainer`); its pieces live next to it: process group and
device in :mod:`~icmformer.training.distributed`, data order and RNG states in
:mod:`~icmformer.training.rng`, the state file in :mod:`~icmformer.training.state`, the
iterative forward pass, optimiser and LR schedule in :mod:`~icmformer.training.step`, DVCLive in
:mod:`~icmformer.training.live` (all their public names are importable from here too).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from icmformer.training.config import TrainConfig, config_to_yaml, save_config
from icmformer.training.distributed import DistInfo, dist_info_from_env, resolve_device
from icmformer.training.iterative import keep_first_click
from icmformer.training.live import make_live, truncate_dvclive
from icmformer.training.loss import normalized_focal_loss
from icmformer.training.rng import (
    batch_rng,
    batch_torch_seed,
    epoch_batches,
    rng_state,
    seed_everything,
    set_rng_state,
)
from icmformer.training.state import (
    STATE_FILE,
    STATE_FORMAT,
    STATE_VERSION,
    TrainState,
    load_training_state,
    save_state_file,
)
from icmformer.training.step import (
    IterativeOutput,
    batch_iou,
    build_optimizer,
    build_scheduler,
    compact_clicks,
    cosine_factor,
    iterative_forward,
)
from icmformer.training.validate import validate_model
from icmformer.training.zoom import zoom_iterative_forward
from icmformer.utils import atomic_write_text, describe_device

__all__ = [  # the names this module has always offered (their homes are the modules imported above)
    "CONFIG_FILE", "DVCLIVE_DIR", "MODEL_FILE", "STATE_FILE", "STATE_FORMAT", "STATE_VERSION", "SUMMARY_FILE", "VAL_FILE",
    "DistInfo", "IterativeOutput", "TrainState", "Trainer", "batch_iou", "batch_rng", "batch_torch_seed", "build_optimizer",
    "check_data_root", "compact_clicks", "cosine_factor", "dist_info_from_env", "epoch_batches", "iterative_forward",
    "load_training_state", "make_live", "resolve_device", "rng_state", "seed_everything", "set_rng_state", "train",
]  # fmt: skip

MODEL_FILE = "model.safetensors"
SUMMARY_FILE = "train_summary.json"
VAL_FILE = "val.jsonl"
CONFIG_FILE = "config.yaml"
DVCLIVE_DIR = "dvclive"


# config keys that may change between a run and its resumption without breaking exactness
_RESUMABLE_CHANGES = ("max_steps", "output_dir", "num_workers", "log_interval", "checkpoint_interval", "device",
                      "schedule.epochs", "val.batch_size")  # fmt: skip

DATA_LAYOUTS = {
    "folder": "img/ and gt/ subfolders (one instance per mask file)",
    "sbd": "img/, inst/ and <split>.txt (RITM's SBD layout)",
    "cocolvis": "<split>/images, <split>/masks and <split>/hannotation.pickle (RITM's COCO+LVIS layout)",
}


def check_data_root(data_cfg) -> None:
    """Fail early, naming the key, when the training data folder is not there."""
    if data_cfg.kind == "mixed":
        for i, src in enumerate(data_cfg.sources):
            try:
                check_data_root(src)
            except (ValueError, FileNotFoundError) as e:
                raise type(e)(str(e).replace("config key data.", f"config key data.sources[{i}].", 1)) from None
        return
    root = str(data_cfg.data_root or "").strip()
    layout = DATA_LAYOUTS.get(data_cfg.kind, "")
    if not root:
        raise ValueError(f"config key data.data_root: empty; set it to the {data_cfg.kind} dataset folder ({layout})")
    path = Path(root)
    if not path.is_dir():
        raise FileNotFoundError(
            f"config key data.data_root: dataset folder not found: {path} (absolute: {path.resolve()}); "
            f"data.kind={data_cfg.kind} expects {layout}; relative paths are taken from the working directory "
            f"({Path.cwd()}); see data/README.md for where the datasets come from"
        )



def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and k != "overrides":
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out




class Trainer:
    """Iterative click training of one config (see the module docstring).

    Args:
        cfg: a validated :class:`~icmformer.training.config.TrainConfig`.
        output_dir: where outputs go (default ``cfg.output_dir``).
        resume: ``True``: continue from ``<output_dir>/checkpoints/last.pt`` (an error if there is
            none); ``"if_exists"``: continue from it if it exists, else start a new run.
        progress: show a tqdm bar (rank 0, only on a TTY).
        quiet: no progress bar and no log lines.
        save_every_steps: also checkpoint every N optimiser steps (``0``: off).
        dataset: a ready training dataset (``len``, ``set_epoch``, ``__getitem__``) instead of
            building one from ``cfg.data`` (tests, custom data).
        dist_info: the process group position (default: from the environment).
        log: where log lines go (default ``print``).

    Construction checks the inputs (data folder, pretrained backbone, checkpoint) and builds the
    model before any long work; :meth:`fit` trains and returns the summary dict.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        *,
        output_dir: str | Path | None = None,
        resume: bool | str = False,
        progress: bool = True,
        quiet: bool = False,
        save_every_steps: int = 0,
        dataset: Any = None,
        dist_info: DistInfo | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.cfg = cfg.validate()
        self._config_yaml = config_to_yaml(cfg)
        if save_every_steps < 0:
            raise ValueError(f"save_every_steps must be >= 0, got {save_every_steps}")
        self.output_dir = Path(output_dir if output_dir is not None else cfg.output_dir)
        self.info = dist_info or dist_info_from_env()
        self.quiet = bool(quiet)
        self.progress = bool(progress) and not self.quiet
        self.save_every_steps = int(save_every_steps)
        self._log = log or print
        self._own_process_group = False
        self.resumed_from: int | None = None

        # 1. cheap input checks, then the model (a missing pretrained file raises here)
        if dataset is None:
            check_data_root(cfg.data)
        self.device = resolve_device(cfg.device, self.info)
        seed_everything(cfg.seed)
        self.model = self._build_model()
        # 2. process group (after the checks, so that a bad config fails in every rank alike)
        self._init_process_group()
        # 3. data
        self._set_dataset(dataset)
        # 4. optimisation
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(params, cfg.optim)
        self.scheduler, self.step_scheduler = build_scheduler(self.optimizer, cfg.schedule, self.steps_per_epoch)
        if cfg.zoom.enabled and self.info.distributed:
            raise ValueError("config key zoom.enabled: zoom-in training runs in one process only (no DDP)")
        # 5. the state: new, or resumed from the state file
        self._init_state(resume)
        self.net: nn.Module = self._wrap_ddp()
        self._history: list[tuple[int, float, float]] = []

    def _build_model(self) -> nn.Module:
        from icmformer.models.registry import create_model

        m = self.cfg.model
        model = create_model(
            m.name, checkpoint=m.checkpoint or None, pretrained_backbone=m.pretrained_backbone or None, **dict(m.overrides),
        )  # fmt: skip
        return model.to(self.device)

    def _init_process_group(self) -> None:
        if not self.info.distributed or dist.is_initialized():
            return
        for var in ("MASTER_ADDR", "MASTER_PORT"):
            if not os.environ.get(var):
                raise ValueError(f"WORLD_SIZE={self.info.world_size} but {var} is not set: launch with torchrun")
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        backend = "nccl" if self.device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=self.info.rank, world_size=self.info.world_size)
        self._own_process_group = True

    def _set_dataset(self, dataset: Any) -> None:
        cfg = self.cfg
        if dataset is None:
            from icmformer.data.train_datasets import build_train_dataset

            dataset = build_train_dataset(cfg.data, cfg.clicks, seed=cfg.seed)
        self.dataset = dataset
        self.num_items = len(dataset)
        self.batches_per_epoch = (self.num_items // self.info.world_size) // cfg.batch_size
        if self.batches_per_epoch < 1:
            raise ValueError(
                f"config key data.epoch_len: an epoch of {self.num_items} items gives no full batch of "
                f"batch_size={cfg.batch_size} on each of {self.info.world_size} process(es); raise data.epoch_len "
                "or lower batch_size"
            )
        self.steps_per_epoch = math.ceil(self.batches_per_epoch / cfg.grad_accum_steps)

    def _init_state(self, resume: bool | str) -> None:
        self.state = TrainState()
        self.state_path = self.output_dir / STATE_FILE
        if self.info.is_main:  # temporary files of a save killed mid-way (SIGKILL) are removed at start
            from icmformer.filesafety import clean_stale_tmp

            clean_stale_tmp(self.state_path)
        if resume not in (False, True, "if_exists"):
            raise ValueError(f"resume must be True, False or 'if_exists', got {resume!r}")
        if resume:
            if self.state_path.is_file():
                self._load(self.state_path)
            elif resume != "if_exists":
                raise FileNotFoundError(
                    f"--resume: no training state at {self.state_path}; run without --resume to start a new run"
                )
        elif self.info.is_main and self.state_path.is_file():
            self._print(f"note: {self.state_path} exists; starting over (pass --resume to continue it)")

    def _wrap_ddp(self) -> nn.Module:
        if not self.info.distributed:
            return self.model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(self.model, device_ids=ids)

    # -------------------------------------------------------------------------- properties
    @property
    def total_steps(self) -> int:
        """Optimiser steps of the whole run (``max_steps`` caps the schedule)."""
        total = self.steps_per_epoch * self.cfg.schedule.epochs
        return min(total, self.cfg.max_steps) if self.cfg.max_steps > 0 else total

    def is_finished(self) -> bool:
        s = self.state
        if self.cfg.max_steps > 0 and s.step >= self.cfg.max_steps:
            return True
        return s.epoch >= self.cfg.schedule.epochs

    def _print(self, msg: str) -> None:
        if self.info.is_main and not self.quiet:
            self._log(msg)

    def _autocast(self):
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=bool(self.cfg.bf16))

    # -------------------------------------------------------------------------- state files
    def state_dict(self, rng_states: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The training state as tensors and plain containers."""
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "model_name": str(self.cfg.model.name),
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "train_state": asdict(self.state),
            "rng": rng_states if rng_states is not None else [rng_state()],
            "world_size": self.info.world_size,
            "batch_size": int(self.cfg.batch_size),
            "grad_accum_steps": int(self.cfg.grad_accum_steps),
            "config": self._config_yaml,
        }

    def save_state(self, path: str | Path | None = None) -> Path:
        """Write the training state atomically (collective under DDP: every rank must call it)."""
        path = Path(path) if path is not None else self.state_path
        states = [rng_state()]
        if self.info.distributed:
            gathered: list[Any] = [None] * self.info.world_size
            dist.all_gather_object(gathered, states[0])
            states = gathered
        if self.info.is_main:
            save_state_file(self.state_dict(states), path)
        return path

    def _load(self, path: Path) -> None:
        st = load_training_state(path)
        if st.get("model_name") != self.cfg.model.name:
            raise ValueError(f"{path}: the training state is of model {st.get('model_name')!r}, the config says {self.cfg.model.name!r}")
        self._warn_config_changes(st, path)
        self.model.load_state_dict(st["model"], strict=True)
        self.optimizer.load_state_dict(st["optimizer"])
        self.scheduler.load_state_dict(st["scheduler"])
        self.state = TrainState(**st["train_state"])
        rngs = st.get("rng") or []
        if len(rngs) == self.info.world_size:
            set_rng_state(rngs[self.info.rank])
        elif rngs:
            set_rng_state(rngs[0])
        self.resumed_from = self.state.step
        self._print(f"resumed from {path}: step {self.state.step}, epoch {self.state.epoch}, batch {self.state.batch_in_epoch}")

    def _warn_config_changes(self, st: dict[str, Any], path: Path) -> None:
        if not self.info.is_main:
            return
        from icmformer.training.config import config_from_dict
        from omegaconf import OmegaConf

        try:
            old = config_from_dict(OmegaConf.to_container(OmegaConf.create(st["config"])))
        except (ValueError, TypeError):
            self._print(f"warning: {path}: the saved config cannot be read; cannot check for changes")
            return
        before, after = _flatten(old.to_dict()), _flatten(self.cfg.to_dict())
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k) and k not in _RESUMABLE_CHANGES)
        if st.get("world_size") != self.info.world_size:
            changed.append(f"world size ({st.get('world_size')} -> {self.info.world_size})")
        if changed:
            self._print(f"warning: resuming {path} with changed settings: {', '.join(changed)}; the run will not "
                        "match an uninterrupted one")  # fmt: skip

    # -------------------------------------------------------------------------- data
    def _loader(self, batches: list[list[int]]):
        from torch.utils.data import DataLoader

        return DataLoader(
            self.dataset, batch_sampler=batches, num_workers=int(self.cfg.num_workers),
            pin_memory=self.device.type == "cuda", persistent_workers=False,
        )  # fmt: skip

    def _to_device(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        nb = self.device.type == "cuda"
        return (
            batch["image"].to(self.device, non_blocking=nb).float(),
            batch["gt"].to(self.device, non_blocking=nb).float(),
            batch["clicks"].to(self.device, non_blocking=nb).float(),
        )

    # -------------------------------------------------------------------------- one batch
    def train_batch(self, batch: dict[str, Any], rng: np.random.Generator, loss_scale: float = 1.0) -> dict[str, float]:
        """Forward (iterative) + backward of one batch; gradients accumulate (no optimiser step).

        Returns ``loss`` (unscaled), ``iou`` (batch mean) and ``num_iters``.
        """
        c = self.cfg.clicks
        image, gt, clicks = self._to_device(batch)
        if c.single_click_prob > 0:  # no draw otherwise: the RNG sequence of older runs is unchanged
            clicks = keep_first_click(clicks, rng.random(clicks.shape[0]) < c.single_click_prob)
        if self.cfg.zoom.enabled:
            z = self.cfg.zoom
            size = int(z.input_size or self.model.default_input_size)
            if z.input_sizes:  # no draw otherwise: the RNG sequence of older runs is unchanged
                size = int(z.input_sizes[int(rng.choice(len(z.input_sizes), p=np.asarray(z.input_size_probs, float)))])
            logits, gt_view, num_iters = zoom_iterative_forward(
                self.model, image, gt, clicks, rng, input_size=size,
                zoom_prob=float(z.prob), min_crop_size=float(z.min_crop_size), max_num_next_clicks=c.max_num_next_clicks,
                thresh=c.pred_thresh, mode=c.next_click_mode, center_prob=c.next_click_center_prob, autocast=self._autocast,
            )  # fmt: skip
            return self._backward(logits, gt_view, num_iters, loss_scale)
        out = iterative_forward(
            self.net, image, gt, clicks, rng, max_num_next_clicks=c.max_num_next_clicks, thresh=c.pred_thresh,
            mode=c.next_click_mode, center_prob=c.next_click_center_prob, eval_model=self.model, autocast=self._autocast,
        )  # fmt: skip
        return self._backward(out.logits, gt, out.num_iters, loss_scale)

    def _backward(self, logits: torch.Tensor, gt: torch.Tensor, num_iters: int, loss_scale: float) -> dict[str, float]:
        loss = normalized_focal_loss(logits.float(), gt, alpha=self.cfg.loss.alpha, gamma=self.cfg.loss.gamma)
        if not torch.isfinite(loss):
            raise RuntimeError(f"non-finite loss ({loss.item()}) at step {self.state.step}, epoch {self.state.epoch}; "
                               "lower optim.lr or disable bf16")  # fmt: skip
        (loss * loss_scale).backward()
        iou = batch_iou(logits, gt, self.cfg.clicks.pred_thresh).mean()
        return {"loss": float(loss.detach()), "iou": float(iou), "num_iters": num_iters}

    def _reduce(self, values: list[float]) -> list[float]:
        if not self.info.distributed:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return (t / self.info.world_size).tolist()

    # -------------------------------------------------------------------------- the run
    def fit(self) -> dict[str, Any]:
        """Train until ``schedule.epochs`` or ``max_steps``; returns the summary (also written to
        ``train_summary.json``). A run that is already finished is not trained again: the summary
        has ``already_finished: true``."""
        try:
            return self._fit()
        finally:
            if self._own_process_group and dist.is_initialized():
                dist.destroy_process_group()
                self._own_process_group = False

    def _fit(self) -> dict[str, Any]:
        out = self.output_dir
        if self.is_finished():
            summary_path = out / SUMMARY_FILE
            summary = json.loads(summary_path.read_text()) if summary_path.is_file() else self._summary(0.0, 0, 0.0)
            summary["already_finished"] = True
            return summary
        if self.info.is_main:
            out.mkdir(parents=True, exist_ok=True)
            save_config(self.cfg, out / CONFIG_FILE)
        live = self._open_live() if self.info.is_main else None
        bar = self._progress_bar()
        self.net.train()
        self._t0 = time.perf_counter()
        self._time_base = self.state.train_time_s
        self._images_now = 0
        stop = False
        try:
            while not stop and not self.is_finished():
                stop = self._run_epoch(live, bar)
        finally:
            if bar is not None:
                bar.close()
        return self._finish(live)

    def _train_time(self) -> float:
        """Training seconds of the whole run (earlier sessions included) up to now."""
        return self._time_base + time.perf_counter() - self._t0

    def _run_epoch(self, live, bar) -> bool:
        """The rest of epoch ``state.epoch`` (from ``state.batch_in_epoch``); True when ``max_steps`` stopped it."""
        cfg, info, st = self.cfg, self.info, self.state
        accum, nb, epoch = cfg.grad_accum_steps, self.batches_per_epoch, st.epoch
        batches = epoch_batches(self.num_items, cfg.batch_size, cfg.seed, epoch, info.rank, info.world_size)
        if len(batches) != nb:  # pragma: no cover - defensive
            raise RuntimeError(f"epoch {epoch}: {len(batches)} batches, expected {nb}")
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        stop = False
        group: list[dict[str, float]] = []
        for b, batch in enumerate(self._loader(batches[st.batch_in_epoch :]), start=st.batch_in_epoch):
            g0 = (b // accum) * accum
            gsize = min(accum, nb - g0)
            last_in_group = b + 1 - g0 == gsize
            torch.manual_seed(batch_torch_seed(cfg.seed, epoch, b, info.rank))
            rng = batch_rng(cfg.seed, epoch, b, info.rank)
            sync = contextlib.nullcontext() if (last_in_group or not info.distributed) else self.net.no_sync()
            with sync:
                group.append(self.train_batch(batch, rng, loss_scale=1.0 / gsize))
            st.batch_in_epoch = b + 1
            self._images_now += cfg.batch_size * info.world_size
            st.images_seen += cfg.batch_size * info.world_size
            if not last_in_group:
                continue
            self._optimizer_step(group, live, bar)
            group = []
            if cfg.max_steps > 0 and st.step >= cfg.max_steps:
                stop = True
                break
        if st.batch_in_epoch >= nb:
            self._end_epoch()
        return stop

    def _optimizer_step(self, group: list[dict[str, float]], live, bar) -> None:
        """Step the optimiser on the accumulated gradients of ``group``, then log, validate and checkpoint."""
        cfg, st = self.cfg, self.state
        if cfg.optim.clip_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), float(cfg.optim.clip_grad_norm))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.step_scheduler:
            self.scheduler.step()
        st.step += 1
        loss, iou = self._reduce([float(np.mean([r["loss"] for r in group])), float(np.mean([r["iou"] for r in group]))])
        elapsed = time.perf_counter() - self._t0
        self._after_step(loss, iou, self._images_now / max(elapsed, 1e-9), live, bar)
        if cfg.val.every_steps and st.step % cfg.val.every_steps == 0 and self.info.is_main:
            st.train_time_s = self._train_time()
            self.validate()
        if self.save_every_steps and st.step % self.save_every_steps == 0:
            st.train_time_s = self._train_time()
            self.save_state()

    def _end_epoch(self) -> None:
        st = self.state
        if not self.step_scheduler:
            self.scheduler.step()
        st.epoch += 1
        st.batch_in_epoch = 0
        if st.epoch % self.cfg.checkpoint_interval == 0 and not self.is_finished():
            st.train_time_s = self._train_time()
            self.save_state()

    def _finish(self, live) -> dict[str, Any]:
        """The end of a session: state, last validation, final weights, summary."""
        cfg, st, out = self.cfg, self.state, self.output_dir
        wall = time.perf_counter() - self._t0
        st.train_time_s = self._time_base + wall
        self.save_state()
        if cfg.val.every_steps and st.step % cfg.val.every_steps and self.info.is_main:
            self.validate()
        summary = self._summary(wall, self._images_now, self._images_now / max(wall, 1e-9))
        if not self.info.is_main:
            return summary
        from icmformer.models.checkpoint import save_checkpoint

        save_checkpoint(self.model, out / MODEL_FILE, metadata={
            "train_steps": st.step, "train_epochs": st.epoch, "train_config": self._config_yaml,
        })  # fmt: skip
        atomic_write_text(out / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
        if live is not None:
            live.make_summary()
        self._print(
            f"{'finished' if summary['finished'] else 'stopped'} at step {st.step} (epoch {st.epoch}, batch "
            f"{st.batch_in_epoch}/{self.batches_per_epoch}); loss {summary['final_loss']:.4f}, IoU "
            f"{summary['final_iou']:.3f}, {summary['images_per_s']:.1f} images/s, {wall:.1f} s; outputs in {out}"
        )
        return summary

    def validate(self) -> dict[str, Any]:
        """Validation on ``cfg.val`` (see :class:`~icmformer.training.config.ValSection`); appends a
        row to ``<output_dir>/val.jsonl`` (``train_time_s`` there includes the earlier validations, whose
        ``seconds`` each row records); returns the row."""
        v, st = self.cfg.val, self.state
        row = validate_model(self.model, v.kind, v.data_root, split=v.split, max_instances=v.max_instances,
                             max_clicks=v.max_clicks, batch_size=v.batch_size)  # fmt: skip
        row = {"step": st.step, "images_seen": st.images_seen, "train_time_s": round(st.train_time_s, 1),
               "threads": torch.get_num_threads(), **row}  # fmt: skip
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with open(self.output_dir / VAL_FILE, "a") as f:
            f.write(json.dumps(row) + "\n")
        curve = ", ".join(f"{v:.3f}" for v in row["miou"][:5])
        self._print(f"validation at step {st.step}: NoC@85 {row['noc85']:.2f}, NoC@90 {row['noc90']:.2f}, NoF@90 "
                    f"{row['nof90']}, mIoU at clicks 1-5 {curve} ({row['seconds']:.0f} s)")  # fmt: skip
        self.model.train()
        return row

    def _after_step(self, loss: float, iou: float, ips: float, live, bar) -> None:
        st, cfg = self.state, self.cfg
        lr = float(self.optimizer.param_groups[0]["lr"])
        self._history.append((st.step, loss, iou))
        if live is not None:
            live.step = st.step
            live.log_metric("train/loss", loss)
            live.log_metric("train/iou", iou)
            live.log_metric("train/lr", lr)
            live.make_summary()  # metrics.json; (next_step would also signal VS Code and DVC Studio)
        if bar is not None:
            bar.set_postfix(loss=f"{loss:.4f}", iou=f"{iou:.3f}", img_s=f"{ips:.1f}", refresh=False)
            bar.update(1)
        elif st.step % cfg.log_interval == 0 or st.step == 1:
            self._print(
                f"step {st.step}/{self.total_steps} epoch {st.epoch} loss {loss:.4f} iou {iou:.3f} lr {lr:.3g} "
                f"{ips:.1f} img/s"
            )

    def _progress_bar(self):
        if not (self.info.is_main and self.progress and sys.stderr.isatty()):
            return None
        from tqdm.auto import tqdm

        return tqdm(total=self.total_steps, initial=self.state.step, unit="step", dynamic_ncols=True, desc="train")

    def _open_live(self):
        resume = self.resumed_from is not None
        live_dir = self.output_dir / DVCLIVE_DIR
        if resume:
            truncate_dvclive(live_dir, self.state.step)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            live = make_live(live_dir, resume=resume)
        if not resume:
            with contextlib.suppress(Exception):
                live.log_params(_flatten(self.cfg.to_dict()))
        return live

    def _summary(self, wall: float, images_now: int, ips: float) -> dict[str, Any]:
        st, cfg = self.state, self.cfg
        tail = self._history[-max(1, cfg.log_interval) :]
        nparams = sum(p.numel() for p in self.model.parameters())
        return {
            "finished": self.is_finished(),
            "stopped_by": ("max_steps" if cfg.max_steps > 0 and st.step >= cfg.max_steps and st.epoch < cfg.schedule.epochs
                           else "epochs" if st.epoch >= cfg.schedule.epochs else "interrupted"),  # fmt: skip
            "steps": st.step,
            "total_steps": self.total_steps,
            "epochs_completed": st.epoch,
            "batch_in_epoch": st.batch_in_epoch,
            "epoch_progress": st.epoch + st.batch_in_epoch / self.batches_per_epoch,
            "epochs": cfg.schedule.epochs,
            "batches_per_epoch": self.batches_per_epoch,
            "steps_per_epoch": self.steps_per_epoch,
            "batch_size": cfg.batch_size,
            "grad_accum_steps": cfg.grad_accum_steps,
            "world_size": self.info.world_size,
            "effective_batch_size": cfg.batch_size * cfg.grad_accum_steps * self.info.world_size,
            "images_seen": st.images_seen,
            "images_this_session": images_now,
            "images_per_s": ips,
            "wall_time_s": wall,
            "train_time_s_total": st.train_time_s,
            "final_loss": self._history[-1][1] if self._history else float("nan"),
            "final_iou": self._history[-1][2] if self._history else float("nan"),
            "final_loss_mean": float(np.mean([h[1] for h in tail])) if tail else float("nan"),
            "final_iou_mean": float(np.mean([h[2] for h in tail])) if tail else float("nan"),
            "mean_over_last_steps": len(tail),
            "first_loss": self._history[0][1] if self._history else float("nan"),
            "lr": float(self.optimizer.param_groups[0]["lr"]),
            "resumed_from_step": self.resumed_from,
            "model": cfg.model.name,
            "num_params": nparams,
            "bf16": bool(cfg.bf16),
            "device": describe_device(self.device),
            "torch": torch.__version__,
            "state_file": str(STATE_FILE),
            "model_file": MODEL_FILE,
        }



def train(cfg: TrainConfig, **options: Any) -> dict[str, Any]:
    """Build a :class:`Trainer` (keyword ``options`` as there: ``output_dir``, ``resume``, ``progress``,
    ``quiet``, ``save_every_steps``, ``dataset``, ...) and run it; returns the summary."""
    return Trainer(cfg, **options).fit()
