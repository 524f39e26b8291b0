"""Bad user input -> one line on stderr and a non-zero exit, never a traceback.

:func:`user_error` maps the exceptions that library code raises for bad input (missing or
unreadable files, corrupt checkpoints, bad JSON/YAML, full disks, permissions, images over the
pixel limit) to one line; anything else is a bug and keeps its traceback. ``icmformer --debug
...`` (or ``ICMFORMER_DEBUG=1``) shows the traceback of user errors too.

:func:`check_output_file` is called by the subcommands before their expensive work, so a bad
output path fails in a second, not after inference.
"""
from __future__ import annotations

import errno
import json
import os
from pathlib import Path

EXIT_USER_ERROR = 1


def _one_line(text: str) -> str:
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    return "; ".join(lines) if lines else ""


def _os_error(exc: OSError) -> str:
    name = exc.filename if exc.filename is not None else ""
    where = f" {name}" if name else ""
    if exc.errno == errno.ENOSPC:
        return f"no space left on the device while writing{where}; free some space (finished work is kept; rerun to resume)"
    if exc.errno == errno.EDQUOT:
        return f"disk quota exceeded while writing{where}"
    if isinstance(exc, PermissionError) or exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"permission denied:{where or ' (no file named)'} ({exc.strerror or exc}); choose a writable location"
    if isinstance(exc, FileNotFoundError) and exc.filename is not None:
        return f"file or folder not found: {name}"
    if isinstance(exc, IsADirectoryError) and exc.filename is not None:
        return f"{name} is a directory; give a file name"
    return _one_line(str(exc)) or type(exc).__name__


def user_error(exc: BaseException) -> str | None:
    """A one-line message for an exception caused by bad input, or ``None`` (a bug: show the traceback)."""
    try:
        from safetensors import SafetensorError
    except ImportError:  # pragma: no cover - safetensors is a dependency
        SafetensorError = ()  # type: ignore[assignment]
    if isinstance(exc, json.JSONDecodeError):
        return f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
    if SafetensorError and isinstance(exc, SafetensorError):
        return f"cannot read safetensors file (corrupt or truncated: {_one_line(str(exc))})"
    if isinstance(exc, MemoryError):
        return "out of memory (a smaller input, --max-image-pixels or a smaller --batch-size may help)"
    if isinstance(exc, OSError):  # before ValueError: errors of files and disks
        return _os_error(exc)
    if isinstance(exc, (ValueError, KeyError, RuntimeError)):
        text = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        return _one_line(str(text)) or type(exc).__name__
    try:
        import yaml

        if isinstance(exc, yaml.YAMLError):
            return f"invalid YAML: {_one_line(str(exc))}"
    except ImportError:  # pragma: no cover
        pass
    try:
        from omegaconf.errors import OmegaConfBaseException

        if isinstance(exc, OmegaConfBaseException):
            return _one_line(str(exc).split("\n")[0])
    except ImportError:  # pragma: no cover
        pass
    return None


def check_output_file(path: str | Path, option: str, extensions: tuple[str, ...], force: bool = True) -> Path:
    """Fail early for an output file: known extension, not a folder, (with ``force=False``) not
    existing, and its folder creatable and writable. Creates the folder; writes nothing else."""
    path = Path(path)
    if extensions and path.suffix.lower() not in extensions:
        raise ValueError(f"{option} {path}: unknown file type {path.suffix or '(none)'!r}; use one of {', '.join(extensions)}")
    if path.is_dir():
        raise ValueError(f"{option} {path} is a directory; give a file name")
    if path.exists() and not force:
        raise ValueError(f"{option} {path} exists; pass --force to overwrite it")
    check_writable_dir(path.parent, option)
    if path.exists() and not os.access(path, os.W_OK):
        raise PermissionError(errno.EACCES, "not writable", str(path))
    return path


def check_writable_dir(folder: str | Path, option: str) -> Path:
    """Check that files can be created in ``folder`` (or, if it does not exist yet, in its nearest
    existing parent, where it will be created) with a probe file; creates nothing else."""
    folder = Path(folder)
    base = folder
    while not base.exists() and base.parent != base:
        base = base.parent
    if not base.is_dir():
        raise ValueError(f"{option} {folder}: {base} is a file, not a folder")
    probe = base / f".icmformer-write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
    except OSError as exc:
        raise type(exc)(exc.errno, f"cannot write to {base} ({option})", str(folder)) from None
    finally:
        try:
            probe.unlink()
        except OSError:
            pass
    return folder
