"""Shared pytest fixtures.

The benchmark sets (GrabCut, Berkeley, DAVIS, COCO_MVal) are found through the environment
variable ``ICMFORMER_SHARED_DATA`` or at ``../shared/data`` next to the repository. Tests that
need them use the ``shared_data`` fixture and skip, with the reason, where neither exists.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def find_shared_data() -> Path | None:
    env = os.environ.get("ICMFORMER_SHARED_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(REPO.parent / "shared" / "data")
    for c in candidates:
        if c.is_dir():
            return c
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = find_shared_data()
    if root is None:
        pytest.skip(
            "benchmark data not found: set ICMFORMER_SHARED_DATA or place the sets at ../shared/data"
        )
    return root


@pytest.fixture(autouse=True)
def _seed_and_threads():
    # Deterministic tests; two threads match the CI machine.
    torch.manual_seed(0)
    np.random.seed(0)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    yield
