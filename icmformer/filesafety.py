"""Writing state files safely: stale temporary files, and clear errors when a write fails.

Atomic saves write ``.<name>.tmp<pid>`` next to the target and rename it. A process killed
during the save (SIGKILL, power loss) leaves that temporary file behind; :func:`clean_stale_tmp`
removes the ones whose process is gone (called before each save and when a run starts).

``torch.save`` reports a full disk as ``RuntimeError: [enforce fail at inline_container.cc:...]
... unexpected pos ...``; :func:`write_error` turns such failures into an ``OSError`` naming the
file (``ENOSPC`` when the file system is full), which the CLI prints in one line.
"""
from __future__ import annotations

import errno
import os
import re
import shutil
from pathlib import Path

__all__ = ["clean_stale_tmp", "write_error", "pid_alive"]

_TMP = re.compile(r"\.tmp(\d+)$")


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (on this machine)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_tmp(path: str | Path) -> list[Path]:
    """Remove ``.<name>.tmp<pid>`` files next to ``path`` left by processes that no longer run."""
    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    for p in path.parent.glob(f".{path.name}.tmp*"):
        m = _TMP.search(p.name)
        if not m or int(m.group(1)) == os.getpid() or pid_alive(int(m.group(1))):
            continue
        try:
            p.unlink()
            removed.append(p)
        except OSError:
            pass
    return removed


def _disk_full(path: Path, margin: int = 64 << 20) -> bool:
    try:
        return shutil.disk_usage(path.parent).free < margin
    except OSError:
        return False


def write_error(exc: BaseException, path: str | Path) -> OSError:
    """An ``OSError`` naming ``path`` for a failed write (``ENOSPC`` when the disk is full)."""
    path = Path(path)
    if isinstance(exc, OSError) and exc.errno is not None:
        return type(exc)(exc.errno, exc.strerror or str(exc), str(path))
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if "enforce fail" in first or "unexpected pos" in first or "file write failed" in first or _disk_full(path):
        if _disk_full(path):
            return OSError(errno.ENOSPC, "No space left on device", str(path))
        return OSError(errno.EIO, f"write failed ({first[:120]})", str(path))
    return OSError(errno.EIO, f"write failed ({first[:200]})", str(path))
