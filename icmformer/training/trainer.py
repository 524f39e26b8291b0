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
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import random
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from icmformer.training.config import TrainConfig, config_to_yaml, save_config
from icmformer.training.iterative import add_next_clicks, sample_num_iters
from icmformer.training.loss import normalized_focal_loss
from icmformer.training.validate import validate_model
from icmformer.training.zoom import zoom_iterative_forward

STATE_FORMAT = "icmformer-train-state"
STATE_VERSION = 1
STATE_FILE = Path("checkpoints") / "last.pt"
MODEL_FILE = "model.safetensors"
SUMMARY_FILE = "train_summary.json"
VAL_FILE = "val.jsonl"
CONFIG_FILE = "config.yaml"
DVCLIVE_DIR = "dvclive"

# distinct streams derived from the same (seed, epoch, batch, rank) key
_ORDER_STREAM = 0x0D3A
_CLICK_STREAM = 0x1C4C
_TORCH_STREAM = 0x70C4

# config keys that may change between a run and its resumption without breaking exactness
_RESUMABLE_CHANGES = ("max_steps", "output_dir", "num_workers", "log_interval", "checkpoint_interval", "device",
                      "schedule.epochs")  # fmt: skip

DATA_LAYOUTS = {
    "folder": "img/ and gt/ subfolders (one instance per mask file)",
    "sbd": "img/, inst/ and <split>.txt (RITM's SBD layout)",
    "cocolvis": "<split>/images, <split>/masks and <split>/hannotation.pickle (RITM's COCO+LVIS layout)",
}


# ------------------------------------------------------------------------------ small helpers
@dataclass(frozen=True)
class DistInfo:
    """This process's place in a (torchrun) process group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def dist_info_from_env(env: dict[str, str] | None = None) -> DistInfo:
    """Read ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` (set by ``torchrun``); defaults: one process."""
    env = dict(os.environ if env is None else env)

    def get(name: str, default: int) -> int:
        value = env.get(name, "")
        if value == "":
            return default
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"environment variable {name}={value!r} must be an integer") from None

    world = get("WORLD_SIZE", 1)
    rank = get("RANK", 0)
    local = get("LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK={rank} / WORLD_SIZE={world}: need 0 <= RANK < WORLD_SIZE")
    return DistInfo(rank, world, local)


def resolve_device(name: str, info: DistInfo = DistInfo()) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; under torchrun a CUDA run uses ``cuda:LOCAL_RANK``."""
    name = (name or "auto").strip()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"config key device: {name!r} is not a torch device (use auto, cpu or cuda)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"config key device: {name!r} requested but CUDA is not available (use device=cpu)")
        if info.distributed:
            device = torch.device("cuda", info.local_rank)
        elif device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
    elif device.type != "cpu":
        raise ValueError(f"config key device: {name!r} is not supported (use auto, cpu or cuda)")
    return device


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads)"


def epoch_batches(num_items: int, batch_size: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1) -> list[list[int]]:
    """The item indices of each batch of ``epoch`` on ``rank``.

    A permutation of ``range(num_items)`` drawn from ``(seed, epoch)`` is split into
    ``world_size`` equal, disjoint slices (the remainder is left out); rank ``rank`` cuts its
    slice into full batches (an incomplete last batch is dropped).
    """
    if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"bad batch_size={batch_size}, rank={rank}, world_size={world_size}")
    perm = np.random.default_rng([int(seed), _ORDER_STREAM, int(epoch)]).permutation(int(num_items))
    per_rank = int(num_items) // world_size
    shard = perm[rank * per_rank : (rank + 1) * per_rank]
    return [shard[i * batch_size : (i + 1) * batch_size].tolist() for i in range(per_rank // batch_size)]


def batch_rng(seed: int, epoch: int, batch: int, rank: int = 0) -> np.random.Generator:
    """The click generator of batch ``batch`` of ``epoch`` on ``rank`` (``num_iters`` and next clicks)."""
    return np.random.default_rng([int(seed), _CLICK_STREAM, int(epoch), int(batch), int(rank)])


def batch_torch_seed(seed: int, epoch: int, batch: int, rank: int = 0) -> int:
    """The torch seed set before batch ``batch`` of ``epoch`` on ``rank`` (dropout, drop-path)."""
    ss = np.random.SeedSequence([int(seed), _TORCH_STREAM, int(epoch), int(batch), int(rank)])
    return int(ss.generate_state(1, dtype=np.uint64)[0] & np.uint64(2**63 - 1))


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy's global generator and Python ``random``."""
    torch.manual_seed(int(seed))
    np.random.seed(int(seed) % 2**32)
    random.seed(int(seed))


def rng_state() -> dict[str, Any]:
    """Every global RNG state of this process, as tensors and plain containers."""
    np_state = np.random.get_state(legacy=False)
    np_plain = {
        "bit_generator": str(np_state["bit_generator"]),
        "key": torch.from_numpy(np.asarray(np_state["state"]["key"], dtype=np.int64)),
        "pos": int(np_state["state"]["pos"]),
        "has_gauss": int(np_state["has_gauss"]),
        "gauss": float(np_state["gauss"]),
    }
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "numpy": np_plain,
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    npst = state["numpy"]
    np.random.set_state({
        "bit_generator": npst["bit_generator"],
        "state": {"key": npst["key"].numpy().astype(np.uint32), "pos": int(npst["pos"])},
        "has_gauss": int(npst["has_gauss"]),
        "gauss": float(npst["gauss"]),
    })  # fmt: skip
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))


def batch_iou(logits: torch.Tensor, gt: torch.Tensor, thresh: float = 0.49) -> torch.Tensor:
    """Per-sample IoU of ``sigmoid(logits) > thresh`` vs ``gt == 1``, ignoring ``gt == -1``.

    A sample with neither object nor predicted pixels (union empty) has IoU 1.
    """
    pred = torch.sigmoid(logits.detach().float()) > thresh
    valid = gt != -1
    obj = gt > 0.5
    inter = (pred & obj & valid).flatten(1).sum(1).float()
    union = ((pred | obj) & valid).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp_min(1.0), torch.ones_like(union))


def compact_clicks(clicks: torch.Tensor) -> torch.Tensor:
    """Drop the rows that are padding (label ``-1``) in every sample of the batch.

    The model's disk maps are a union over rows and ignore padding rows, so the logits do not
    change; the ``B x 2P x 3`` training layout has mostly padding rows (``2P = 48``, a few clicks),
    and the disk encoding costs time proportional to the number of rows.
    """
    keep = (clicks[..., 2] != -1).any(dim=0)
    if not bool(keep.any()):
        return clicks[:, :1]
    return clicks[:, keep]


class IterativeOutput(NamedTuple):
    """What :func:`iterative_forward` returns."""

    logits: torch.Tensor  # the final pass (with gradients)
    clicks: torch.Tensor  # the clicks of the final pass (given clicks + added ones)
    prev_mask: torch.Tensor  # the previous mask given to the final pass
    num_iters: int  # number of click-adding no-grad passes


def iterative_forward(
    model: nn.Module,
    image: torch.Tensor,
    gt: torch.Tensor,
    clicks: torch.Tensor,
    rng: np.random.Generator,
    *,
    max_num_next_clicks: int = 3,
    thresh: float = 0.49,
    mode: str = "official",
    center_prob: float = 0.5,
    eval_model: nn.Module | None = None,
    autocast: Callable[[], Any] | None = None,
) -> IterativeOutput:
    """The official iterative training forward pass (``ISTrainer.batch_forward``).

    Args:
        model: the network for the final pass (e.g. the ``DistributedDataParallel`` wrapper).
        image: ``B x 3 x H x W`` in [0, 1]; gt: ``B x 1 x H x W`` with ``1``/``0``/``-1``.
        clicks: ``B x 2P x 3`` initial clicks (points sampler layout).
        rng: draws ``num_iters`` and the positions of the added clicks.
        max_num_next_clicks: ``num_iters`` is uniform in ``0..max_num_next_clicks``.
        thresh, mode, center_prob: see :func:`~icmformer.training.iterative.add_next_clicks`.
        eval_model: the module run in the no-grad passes (default ``model``; pass the unwrapped
            module under DDP).
        autocast: a context-manager factory wrapped around every forward pass (``bf16``).

    The no-grad passes run in ``eval()`` mode; the training mode the model had is restored
    before the final pass. The model receives the clicks without the rows that are padding in
    the whole batch (:func:`compact_clicks`; same logits, cheaper disk encoding); the returned
    ``clicks`` keep the ``B x 2P x 3`` layout.
    """
    eval_model = model if eval_model is None else eval_model
    ctx = autocast or contextlib.nullcontext
    num_iters = sample_num_iters(rng, max_num_next_clicks)
    prev = torch.zeros(gt.shape, dtype=torch.float32, device=image.device)
    if num_iters > 0:
        was_training = eval_model.training
        eval_model.eval()
        try:
            with torch.no_grad():
                for k in range(num_iters):
                    with ctx():
                        logits = eval_model(image, compact_clicks(clicks), prev)
                    prev = torch.sigmoid(logits.float())
                    clicks = add_next_clicks(prev, gt, clicks, rng, thresh=thresh, mode=mode, center_prob=center_prob, step=k + 1)
        finally:
            eval_model.train(was_training)
    with ctx():
        logits = model(image, compact_clicks(clicks), prev)
    return IterativeOutput(logits, clicks, prev, num_iters)


def cosine_factor(step: int, total: int, warmup: int = 0, min_ratio: float = 0.01) -> float:
    """LR factor at optimiser step ``step`` (0-based): linear warm-up to 1 over ``warmup`` steps,
    then a cosine from 1 to ``min_ratio`` at ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    t = min(max(step - warmup, 0) / max(total - warmup, 1), 1.0)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))


def build_optimizer(params, optim_cfg) -> torch.optim.Optimizer:
    """Adam (official: lr 5e-5, betas (0.9, 0.999), eps 1e-8, no weight decay) or AdamW."""
    kwargs = dict(lr=float(optim_cfg.lr), betas=tuple(float(b) for b in optim_cfg.betas), eps=float(optim_cfg.eps),
                  weight_decay=float(optim_cfg.weight_decay))  # fmt: skip
    if optim_cfg.name == "adam":
        return torch.optim.Adam(params, **kwargs)
    if optim_cfg.name == "adamw":
        return torch.optim.AdamW(params, **kwargs)
    raise ValueError(f"config key optim.name: unknown optimiser {optim_cfg.name!r} (adam or adamw)")


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


def _atomic_torch_save(obj: Any, path: Path) -> None:
    from icmformer.filesafety import clean_stale_tmp, write_error

    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_tmp(path)  # left by a process killed during its save
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except (RuntimeError, OSError) as e:  # e.g. a full disk: "[enforce fail at inline_container.cc]"
        raise write_error(e, path) from e
    finally:
        if tmp.exists():
            tmp.unlink()


def _atomic_write_text(text: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and k != "overrides":
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def load_training_state(path: str | Path) -> dict[str, Any]:
    """Read a training state file (``weights_only=True``: tensors and plain containers only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: training state not found")
    from icmformer.safe_pickle import load_torch

    state = load_torch(path, "training state")  # weights_only; one-line errors, no torch advice
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ValueError(f"{path}: not an icmformer training state (format != {STATE_FORMAT!r})")
    return state


# ------------------------------------------------------------------------------ trainer
@dataclass
class TrainState:
    """Where a run stands: ``step`` optimiser steps done, ``epoch`` epochs completed and
    ``batch_in_epoch`` batches of the current epoch consumed."""

    epoch: int = 0
    batch_in_epoch: int = 0
    step: int = 0
    images_seen: int = 0
    train_time_s: float = 0.0


class Trainer:
    """Iterative click training of one config (see the module docstring).

    Args:
        cfg: a validated :class:`~icmformer.training.config.TrainConfig`.
        output_dir: where outputs go (default ``cfg.output_dir``).
        resume: continue from ``<output_dir>/checkpoints/last.pt`` if it exists.
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
        resume: bool = False,
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
        from icmformer.models.registry import create_model

        self.model = create_model(
            cfg.model.name, checkpoint=cfg.model.checkpoint or None, pretrained_backbone=cfg.model.pretrained_backbone or None,
            **dict(cfg.model.overrides),
        )  # fmt: skip
        self.model.to(self.device)

        # 2. process group (after the checks, so that a bad config fails in every rank alike)
        if self.info.distributed and not dist.is_initialized():
            for var in ("MASTER_ADDR", "MASTER_PORT"):
                if not os.environ.get(var):
                    raise ValueError(f"WORLD_SIZE={self.info.world_size} but {var} is not set: launch with torchrun")
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            dist.init_process_group(backend=backend, rank=self.info.rank, world_size=self.info.world_size)
            self._own_process_group = True

        # 3. data
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

        # 4. optimisation
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(params, cfg.optim)
        self.step_scheduler = cfg.schedule.kind == "cosine"
        if self.step_scheduler:
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(
                self.optimizer, partial(cosine_factor, total=self.steps_per_epoch * cfg.schedule.epochs, warmup=int(cfg.schedule.warmup_steps),
                                        min_ratio=float(cfg.schedule.min_lr_ratio)),
            )  # fmt: skip
        else:
            self.scheduler = torch.optim.lr_scheduler.MultiStepLR(
                self.optimizer, milestones=list(cfg.schedule.milestones), gamma=float(cfg.schedule.gamma)
            )
        if cfg.zoom.enabled and self.info.distributed:
            raise ValueError("config key zoom.enabled: zoom-in training runs in one process only (no DDP)")
        self.state = TrainState()
        self.state_path = self.output_dir / STATE_FILE
        if self.info.is_main:  # temporary files of a save killed mid-way (SIGKILL) are removed at start
            from icmformer.filesafety import clean_stale_tmp

            clean_stale_tmp(self.state_path)
        if resume:
            if self.state_path.is_file():
                self._load(self.state_path)
            else:
                raise FileNotFoundError(
                    f"--resume: no training state at {self.state_path}; run without --resume to start a new run"
                )
        elif self.info.is_main and self.state_path.is_file():
            self._print(f"note: {self.state_path} exists; starting over (pass --resume to continue it)")

        if self.info.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net: nn.Module = DistributedDataParallel(self.model, device_ids=ids)
        else:
            self.net = self.model
        self._history: list[tuple[int, float, float]] = []

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
            _atomic_torch_save(self.state_dict(states), path)
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
        if self.cfg.zoom.enabled:
            z = self.cfg.zoom
            logits, gt_view, num_iters = zoom_iterative_forward(
                self.model, image, gt, clicks, rng, input_size=int(z.input_size or self.model.default_input_size),
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
        cfg, info, st = self.cfg, self.info, self.state
        out = self.output_dir
        if self.is_finished():
            summary_path = out / SUMMARY_FILE
            summary = json.loads(summary_path.read_text()) if summary_path.is_file() else self._summary(0.0, 0, 0.0)
            summary["already_finished"] = True
            return summary
        if info.is_main:
            out.mkdir(parents=True, exist_ok=True)
            save_config(self.cfg, out / CONFIG_FILE)
        live = self._open_live() if info.is_main else None
        bar = self._progress_bar()
        self.net.train()
        t0 = time.perf_counter()
        time_base = st.train_time_s
        images_now = 0
        accum = cfg.grad_accum_steps
        nb = self.batches_per_epoch
        stop = False
        try:
            while not stop and not self.is_finished():
                epoch = st.epoch
                batches = epoch_batches(self.num_items, cfg.batch_size, cfg.seed, epoch, info.rank, info.world_size)
                if len(batches) != nb:  # pragma: no cover - defensive
                    raise RuntimeError(f"epoch {epoch}: {len(batches)} batches, expected {nb}")
                if hasattr(self.dataset, "set_epoch"):
                    self.dataset.set_epoch(epoch)
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
                    images_now += cfg.batch_size * info.world_size
                    st.images_seen += cfg.batch_size * info.world_size
                    if not last_in_group:
                        continue
                    if cfg.optim.clip_grad_norm > 0:
                        torch.nn.utils.clip_grad_norm_(self.model.parameters(), float(cfg.optim.clip_grad_norm))
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                    if self.step_scheduler:
                        self.scheduler.step()
                    st.step += 1
                    loss, iou = self._reduce([float(np.mean([r["loss"] for r in group])), float(np.mean([r["iou"] for r in group]))])
                    group = []
                    elapsed = time.perf_counter() - t0
                    self._after_step(loss, iou, images_now / max(elapsed, 1e-9), live, bar)
                    if cfg.val.every_steps and st.step % cfg.val.every_steps == 0 and info.is_main:
                        st.train_time_s = time_base + time.perf_counter() - t0
                        self.validate()
                    if self.save_every_steps and st.step % self.save_every_steps == 0:
                        st.train_time_s = time_base + time.perf_counter() - t0
                        self.save_state()
                    if cfg.max_steps > 0 and st.step >= cfg.max_steps:
                        stop = True
                        break
                if st.batch_in_epoch >= nb:
                    if not self.step_scheduler:
                        self.scheduler.step()
                    st.epoch += 1
                    st.batch_in_epoch = 0
                    if st.epoch % cfg.checkpoint_interval == 0 and not self.is_finished():
                        st.train_time_s = time_base + time.perf_counter() - t0
                        self.save_state()
        finally:
            if bar is not None:
                bar.close()
        wall = time.perf_counter() - t0
        st.train_time_s = time_base + wall
        self.save_state()
        if cfg.val.every_steps and st.step % cfg.val.every_steps and info.is_main:
            self.validate()
        summary = self._summary(wall, images_now, images_now / max(wall, 1e-9))
        if info.is_main:
            from icmformer.models.checkpoint import save_checkpoint

            save_checkpoint(self.model, out / MODEL_FILE, metadata={
                "train_steps": st.step, "train_epochs": st.epoch, "train_config": self._config_yaml,
            })  # fmt: skip
            _atomic_write_text(json.dumps(summary, indent=2) + "\n", out / SUMMARY_FILE)
            if live is not None:
                live.make_summary()
            self._print(
                f"{'finished' if summary['finished'] else 'stopped'} at step {st.step} (epoch {st.epoch}, batch "
                f"{st.batch_in_epoch}/{nb}); loss {summary['final_loss']:.4f}, IoU {summary['final_iou']:.3f}, "
                f"{summary['images_per_s']:.1f} images/s, {wall:.1f} s; outputs in {out}"
            )
        return summary

    def validate(self) -> dict[str, Any]:
        """Validation on ``cfg.val`` (see :class:`~icmformer.training.config.ValSection`); appends a
        row to ``<output_dir>/val.jsonl`` (``train_time_s`` there includes the earlier validations, whose
        ``seconds`` each row records); returns the row."""
        v, st = self.cfg.val, self.state
        row = validate_model(self.model, v.kind, v.data_root, split=v.split, max_instances=v.max_instances,
                             max_clicks=v.max_clicks)  # fmt: skip
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
            _truncate_dvclive(live_dir, self.state.step)
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
            "device": device_description(self.device),
            "torch": torch.__version__,
            "state_file": str(STATE_FILE),
            "model_file": MODEL_FILE,
        }


def make_live(live_dir: str | Path, resume: bool = False):
    """A ``dvclive.Live`` logging to ``live_dir`` with no git or DVC side effects.

    ``save_dvc_exp=False`` and ``dvcyaml=None`` keep it from saving experiments or writing
    ``dvc.yaml``; in addition, DVCLive 3.49 looks up the DVC repository at start-up and, when
    there is none, runs ``dvc init`` in the enclosing git repository (creating ``.dvc/`` and
    staging it in git). The subclass skips that lookup: inside a DVC pipeline stage (``DVC_ROOT``
    set) it only records that it runs inside one, as DVCLive does; metrics files are written the
    same way in both cases.
    """
    from dvclive import Live

    class _Live(Live):
        def _init_dvc(self) -> None:  # noqa: D401 - see make_live
            if os.getenv("DVC_ROOT"):
                self._inside_dvc_pipeline = True
                self._inside_dvc_exp = bool(os.getenv("DVC_EXP_BASELINE_REV"))
            self._save_dvc_exp = False
            self._dvc_repo = None
            self._dvc_file = "dvc.yaml"  # never written (dvcyaml=None)

    return _Live(dir=str(live_dir), resume=resume, save_dvc_exp=False, dvcyaml=None, report=None)


def _truncate_dvclive(live_dir: Path, step: int) -> None:
    """Drop metric rows logged after ``step`` (a run that went on past its last checkpoint)."""
    metrics = live_dir / "plots" / "metrics"
    if not metrics.is_dir():
        return
    for tsv in metrics.rglob("*.tsv"):
        lines = tsv.read_text().splitlines()
        if not lines:
            continue
        header = lines[0].split("\t")
        if "step" not in header:
            continue
        col = header.index("step")
        keep = [lines[0]] + [ln for ln in lines[1:] if ln.split("\t")[col].isdigit() and int(ln.split("\t")[col]) <= step]
        if len(keep) != len(lines):
            _atomic_write_text("\n".join(keep) + "\n", tsv)


def train(
    cfg: TrainConfig,
    *,
    output_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    quiet: bool = False,
    save_every_steps: int = 0,
    dataset: Any = None,
) -> dict[str, Any]:
    """Build a :class:`Trainer` and run it; returns the summary."""
    return Trainer(
        cfg, output_dir=output_dir, resume=resume, progress=progress, quiet=quiet, save_every_steps=save_every_steps,
        dataset=dataset,
    ).fit()  # fmt: skip
