"""Which CPU features and kernels a run used (for ``icmformer bench``).

- :func:`cpu_features`: the instruction-set flags that matter for inference (AVX-512, VNNI, BF16,
  AMX) from ``/proc/cpuinfo``, PyTorch's detected CPU capability and quantised engine.
- :func:`onednn_kernels`: runs a callable with oneDNN's verbose mode on and returns the distinct
  ``operation:implementation`` pairs it executed (e.g. ``matmul:brg_matmul:avx10_1_512_amx`` is
  a bf16 matmul on the AMX tiles). Kernels outside oneDNN (MKL fp32 GEMM, fbgemm int8) print
  nothing there, so an empty list means "no oneDNN primitive", not "no kernel".
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")


def cpu_features() -> dict:
    """CPU flags of interest, PyTorch's CPU capability and quantised engine."""
    import torch

    flags: set[str] = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    capability = None
    with contextlib.suppress(Exception):
        capability = torch.backends.cpu.get_cpu_capability()
    return {
        "flags": [f for f in FLAGS if f in flags],
        "torch_cpu_capability": capability,
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
        "quantized_engine": torch.backends.quantized.engine,
    }


def onednn_kernels(fn: Callable[[], object]) -> list[str]:
    """Distinct ``op:implementation`` of the oneDNN primitives (and ``ukernel`` brgemm calls, with
    their data types) that ``fn()`` executed; the verbose output is captured, not shown."""
    import torch

    sys.stdout.flush()
    fd, path = tempfile.mkstemp(prefix="onednn_verbose_")
    saved = os.dup(1)
    try:
        os.dup2(fd, 1)
        with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
            fn()
        sys.stdout.flush()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(fd)
    try:
        text = Path(path).read_text(errors="replace")
    finally:
        os.unlink(path)
    found: dict[str, None] = {}
    for line in text.splitlines():
        parts = line.split(",")
        if len(parts) < 8 or parts[0] != "onednn_verbose" or parts[3] != "exec":
            continue
        kind, op, impl = parts[2], parts[5], parts[6]
        if kind == "primitive":
            found[f"{op}:{impl}"] = None
        elif kind == "ukernel":
            dtypes = "/".join(sorted({tok.split(":")[1] for tok in parts[8].split() if tok.count(":") >= 2}))
            found[f"{op} ukernel ({dtypes})"] = None
    return list(found)
