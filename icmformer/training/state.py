"""The training state file (``<output_dir>/checkpoints/last.pt``): what a run has done, written
atomically with ``torch.save`` and read with ``weights_only=True``."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from icmformer.utils import atomic_path

STATE_FORMAT = "icmformer-train-state"
STATE_VERSION = 1
STATE_FILE = Path("checkpoints") / "last.pt"


@dataclass
class TrainState:
    """Where a run stands: ``step`` optimiser steps done, ``epoch`` epochs completed and
    ``batch_in_epoch`` batches of the current epoch consumed."""

    epoch: int = 0
    batch_in_epoch: int = 0
    step: int = 0
    images_seen: int = 0
    train_time_s: float = 0.0



def save_state_file(obj: Any, path: str | Path) -> None:
    """``torch.save`` ``obj`` to ``path`` atomically; temporary files left by a process killed during
    its save are removed first, and a failed write (e.g. a full disk) raises a one-line error."""
    from icmformer.filesafety import clean_stale_tmp, write_error

    path = Path(path)
    clean_stale_tmp(path)  # left by a process killed during its save
    try:
        with atomic_path(path) as tmp:
            torch.save(obj, tmp)
    except (RuntimeError, OSError) as e:  # e.g. a full disk: "[enforce fail at inline_container.cc]"
        raise write_error(e, path) from e


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
