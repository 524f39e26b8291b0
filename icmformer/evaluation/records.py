"""Guarding an evaluation's records folder: fingerprints, one writer, no duplicated records.

A resumed evaluation appends to ``records.jsonl``. Three things could silently mix results:

- **another model or protocol**: :func:`check_fingerprint` writes ``fingerprint.json`` with a
  hash of the weights (:func:`weights_fingerprint`, when the run configuration carries
  ``weights_sha256``) and of the protocol (:func:`protocol_fingerprint`: the run configuration
  without the dataset list, ``limit`` and ``batch_size``, which may change between resumes) and
  refuses to resume into a folder whose fingerprint differs, or whose records have no
  fingerprint (made by something else);
- **two evaluations writing at once**: :class:`FolderLock` holds an exclusive ``flock`` on
  ``<out>/.lock`` for the whole run; a second one fails at once, naming the holder's pid. The
  kernel drops the lock when the process dies, so a killed run leaves no stale lock;
- **a record present twice** (a file edited or concatenated by hand): :func:`dedupe_records`
  keeps the first record of each ``(dataset, instance_id)`` and warns with the count.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path

FINGERPRINT = "fingerprint.json"
LOCK = ".lock"
#: run-configuration keys that may differ between a run and its resume
RESUMABLE_KEYS = ("datasets", "limit", "batch_size")


class RecordsWarning(UserWarning):
    """Something in a records file was repaired (e.g. duplicated records dropped)."""


def weights_fingerprint(model) -> str:
    """SHA-256 of a model's state dict (names, dtypes, shapes and bytes, in name order)."""
    import torch

    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        if not isinstance(t, torch.Tensor):
            continue
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.is_quantized:  # int8 fast mode: its integer representation
            t = t.int_repr()
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def protocol_fingerprint(run_config: Mapping) -> str:
    """SHA-256 of the run configuration without the keys a resume may change (:data:`RESUMABLE_KEYS`)."""
    fixed = {k: v for k, v in run_config.items() if k not in RESUMABLE_KEYS and k != "weights_sha256"}
    return hashlib.sha256(json.dumps(fixed, sort_keys=True, default=str).encode()).hexdigest()


def check_fingerprint(out_dir: str | Path, run_config: Mapping, resume: bool, records_file: str = "records.jsonl") -> dict:
    """Refuse to resume into ``out_dir`` if its records were made by other weights or another
    protocol (or carry no fingerprint). Returns the fingerprint for :func:`write_fingerprint`."""
    out_dir = Path(out_dir)
    fp = {"protocol": protocol_fingerprint(run_config), "weights": run_config.get("weights_sha256")}
    path = out_dir / FINGERPRINT
    records = out_dir / records_file
    has_records = records.is_file() and records.stat().st_size > 0
    if resume and has_records:
        if not path.is_file():
            raise ValueError(
                f"{out_dir} holds {records_file} but no {FINGERPRINT}: its records were made by another program "
                "or version and cannot be told apart from this run's; use a new output folder or --no-resume to start over"
            )
        try:
            old = json.loads(path.read_text())
        except ValueError as e:
            raise ValueError(f"{path}: not valid JSON ({e}); use a new output folder or --no-resume") from None
        for key, what in (("weights", "model weights"), ("protocol", "protocol")):
            if old.get(key) != fp[key]:
                raise ValueError(
                    f"{out_dir} holds records of other {what} ({key} fingerprint {str(old.get(key))[:12]} != "
                    f"{str(fp[key])[:12]}); resuming would mix two runs: use a new output folder or --no-resume"
                )
    return fp


def write_fingerprint(out_dir: str | Path, fp: Mapping) -> None:
    """Store ``fp`` (from :func:`check_fingerprint`) in ``out_dir`` atomically."""
    path = Path(out_dir) / FINGERPRINT
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(dict(fp), indent=2) + "\n")
    os.replace(tmp, path)


def dedupe_records(records: list[dict], path: str | Path) -> list[dict]:
    """Keep the first record of each ``(dataset, instance_id)``; warn how many were dropped."""
    seen: set[tuple[str, str]] = set()
    out, dropped, differing = [], 0, 0
    first: dict[tuple[str, str], dict] = {}
    for r in records:
        key = (r["dataset"], r["instance_id"])
        if key in seen:
            dropped += 1
            differing += r.get("ious") != first[key].get("ious")
            continue
        seen.add(key)
        first[key] = r
        out.append(r)
    if dropped:
        warnings.warn(
            f"{path}: {dropped} duplicated record(s) (same dataset and instance) ignored, the first of each kept"
            + (f"; {differing} of them had other IoUs" if differing else ""),
            RecordsWarning,
            stacklevel=2,
        )
    return out


class FolderLock:
    """An exclusive lock on ``<folder>/.lock`` (``flock``, released on :meth:`release` or process exit).

    Also a context manager (``with lock:`` releases on exit).
    """

    def __init__(self, folder: str | Path) -> None:
        import fcntl

        self.path = Path(folder) / LOCK
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                holder = os.pread(self._fd, 64, 0).decode(errors="replace").strip() or "?"
            finally:
                os.close(self._fd)
                self._fd = None
            raise ValueError(
                f"{Path(folder)} is in use by another evaluation (pid {holder}, lock {self.path}); "
                "wait for it to finish or use another output folder"
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            import fcntl

            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "FolderLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self) -> None:  # pragma: no cover - safety net
        try:
            self.release()
        except Exception:
            pass


def prepare_folder(out_dir: str | Path, run_config: Mapping, resume: bool, check_config, records_file: str = "records.jsonl") -> dict:
    """The runner's run-configuration check (``check_config(out_dir, run_config, resume)``, which
    compares and writes ``run.json``), then the fingerprints; ``run.json`` is put back as it was
    when the fingerprint refuses, and the fingerprint is written when both pass."""
    out_dir = Path(out_dir)
    run_json = out_dir / "run.json"
    before = run_json.read_bytes() if run_json.is_file() else None
    check_config(out_dir, run_config, resume)
    try:
        fp = check_fingerprint(out_dir, run_config, resume, records_file)
    except ValueError:
        if before is None:
            run_json.unlink(missing_ok=True)
        else:
            run_json.write_bytes(before)
        raise
    write_fingerprint(out_dir, fp)
    return fp
