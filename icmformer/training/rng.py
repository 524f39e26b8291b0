"""Data order and randomness of training: every batch's randomness is a function of its position
``(seed, epoch, batch, rank)`` only, and the global RNG states are saved with the training state
(what makes ``--resume`` exact; see :mod:`icmformer.training.trainer`)."""
from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

# distinct streams derived from the same (seed, epoch, batch, rank) key
_ORDER_STREAM = 0x0D3A
_CLICK_STREAM = 0x1C4C
_TORCH_STREAM = 0x70C4


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
