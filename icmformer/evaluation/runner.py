"""Resumable evaluation runs: datasets x images x instances -> per-instance records + summary.

Files written to ``out_dir``:

- ``records.jsonl``: one JSON object per instance, appended and flushed (``fsync``) as soon as
  the instance is done: ``dataset``, ``instance_id``, ``image`` (name), ``image_path``,
  ``mask_path``, ``max_clicks``, ``n_clicks``, ``ious`` (float32 values), ``method_time`` and
  ``simulator_time`` (seconds, per click), ``wall_s`` and ``clicks`` (``[y, x, is_positive]``).
  ``wall_s`` is the wall time of the instance; the first instance of an image also carries the
  time to load the image and build the method, so the sum of ``wall_s`` over a dataset is the
  official SPC numerator (whole loop incl. loading, click simulator and method).
- ``run.json``: the run's configuration; a resumed run must have the same configuration.
- ``summary.json``: per-dataset NoC@80/85/90, NoF@85/90, mIoU@k, SPC (official and method-only),
  simulator time per click, instance/image/click counts and data warnings; plus the device and
  the run time.

Resume: finished instances (by ``(dataset, instance_id)``) are skipped and an image whose
instances are all done is not even loaded. A partially written last line (an interrupted write)
is discarded and the file truncated to its last complete line before appending.

One loop serves every method: the runner hands each dataset's instances, as lazily loaded
``(image, gt_mask, tag)`` items, to the method's ``evaluate_items(items, batch_size, **protocol)``
and writes a record per result as it arrives. Model methods
(:class:`icmformer.evaluation.batched.ModelMethod`) run the batched evaluator; a plain
``predict_fn`` factory (e.g. the OpenCV GrabCut baseline) is adapted with
:func:`icmformer.evaluation.loop.evaluate_items`, one instance at a time.

Batched runs (``batch_size=K > 1``, model methods only, see
:mod:`icmformer.evaluation.batched`): K instances advance click by click together, one forward
pass per click step; images are loaded only when the work queue reaches them, and each record is
written as soon as its instance is done (completion order, which is the input order unless
``stop_at_target`` lets instances finish at different clicks). Records carry ``batch_size``; their
``method_time`` is the instance's share of each batched step (step time / instances in the step)
and ``wall_s`` its share of the run's wall-clock timeline, so the summary's ``SPC`` (official:
wall time / clicks) is the real throughput per click of the batched run and ``SPC_method`` the
batched method time per click. ``run.json`` holds ``batch_size`` only when it is above 1, and a
run may be resumed with another batch size (the results do not depend on it).
"""
from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from icmformer.evaluation.loop import PredictFn, evaluate_items
from icmformer.evaluation.metrics import summarize
from icmformer.evaluation.protocol import DEFAULT_PROTOCOL, EvalProtocol
from icmformer.evaluation.records import FolderLock, dedupe_records, prepare_folder
from icmformer.utils import atomic_write_text, describe_device

RECORDS = "records.jsonl"
SUMMARY = "summary.json"
RUN_CONFIG = "run.json"

MethodFactory = Callable[[object], PredictFn]


def read_records(path: str | Path, repair: bool = False) -> list[dict]:
    """Read a ``records.jsonl`` file.

    The writer puts each record and its newline in one write, so a last line without a newline,
    or a last line that is not a valid record, is an interrupted write: it is ignored, and with
    ``repair`` the file is truncated to the end of the last complete record. A broken line followed
    by valid ones raises ``ValueError`` (the file was edited or damaged otherwise).
    """
    path = Path(path)
    if not path.is_file():
        return []
    data = path.read_bytes()
    records: list[dict] = []
    good_end = 0
    pos = 0
    while pos < len(data):
        nl = data.find(b"\n", pos)
        if nl == -1:
            break  # partial last line
        line = data[pos:nl]
        if line.strip():
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict) or "dataset" not in rec or "instance_id" not in rec or "ious" not in rec:
                    raise ValueError("not a record")
            except ValueError:
                if data[nl + 1 :].strip():
                    line_no = data.count(b"\n", 0, pos) + 1
                    raise ValueError(f"{path}: line {line_no} is not a valid record; fix or remove it") from None
                break
            records.append(rec)
        pos = nl + 1
        good_end = pos
    if repair and good_end < len(data):
        with open(path, "r+b") as f:
            f.truncate(good_end)
    return records


def _resolve_datasets(datasets: Iterable, data_root: str | Path | None, dataset_kwargs: Mapping | None):
    from icmformer.data.datasets import BaseDataset, get_dataset

    out = []
    for d in datasets:
        if isinstance(d, BaseDataset):
            out.append(d)
        else:
            kw = dict((dataset_kwargs or {}).get(str(d), {}))
            out.append(get_dataset(str(d), data_root, **kw))
    names = [d.name for d in out]
    if len(set(names)) != len(names):
        raise ValueError(f"datasets listed twice: {names}")
    return out


def _check_config(out_dir: Path, config: dict, resume: bool) -> None:
    path = out_dir / RUN_CONFIG
    if resume and path.is_file() and (out_dir / RECORDS).is_file():
        old = json.loads(path.read_text())
        keys = sorted(set(old) | set(config))
        diff = [k for k in keys if k not in ("datasets", "limit", "batch_size") and old.get(k) != config.get(k)]
        if diff:
            detail = "; ".join(f"{k}: {old.get(k)!r} -> {config.get(k)!r}" for k in diff)
            raise ValueError(
                f"{out_dir} holds records of a run with another configuration ({detail}); "
                "use a new output folder or resume=False (--no-resume) to start over"
            )
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _factory_for(method_factory, name: str) -> MethodFactory:
    if isinstance(method_factory, Mapping):
        if name not in method_factory:
            raise ValueError(f"method_factory has no entry for dataset {name!r} (has {', '.join(method_factory)})")
        return method_factory[name]
    return method_factory


def run_evaluation(
    datasets: Sequence,
    data_root: str | Path | None,
    method_factory: MethodFactory | Mapping[str, MethodFactory],
    out_dir: str | Path,
    max_clicks: int | None = None,
    stop_at_target: bool | None = None,
    resume: bool = True,
    progress: bool = True,
    *,
    limit: int | None = None,
    pred_thr: float | None = None,
    target_iou: float | None = None,
    config: Mapping | None = None,
    device: str | None = None,
    dataset_kwargs: Mapping[str, Mapping] | None = None,
    batch_size: int = 1,
    protocol: EvalProtocol | None = None,
) -> dict:
    """Evaluate a click-driven method on datasets, writing records and a summary to ``out_dir``.

    ``datasets``: names (read from ``data_root``, see :func:`icmformer.data.datasets.get_dataset`)
    or reader objects. ``method_factory``: an object with ``evaluate_items`` (e.g.
    :class:`icmformer.evaluation.batched.ModelMethod`), or ``method_factory(sample) -> predict_fn``
    (called once per image); or a mapping ``{dataset name: factory}``. ``protocol``: the
    :class:`~icmformer.evaluation.protocol.EvalProtocol` (default: the standard one), whose fields
    ``max_clicks``, ``stop_at_target``, ``pred_thr``, ``target_iou`` given here replace.
    ``resume``: skip instances already in ``records.jsonl`` (``False`` starts afresh); ``limit``:
    only the first images of each dataset; ``config``: the method's description for ``run.json``
    (a resumed run must match); ``device``: the hardware description for the summary;
    ``batch_size``: instances per forward pass (above 1 every factory needs ``evaluate_items``).
    Returns the summary (also written to ``summary.json``).
    """
    from tqdm.auto import tqdm

    t_start = time.perf_counter()
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or int(batch_size) < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    batch_size = int(batch_size)
    protocol = (protocol or DEFAULT_PROTOCOL).with_(
        max_clicks=max_clicks, stop_at_target=stop_at_target, pred_thr=pred_thr, target_iou=target_iou
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    readers = _resolve_datasets(datasets, data_root, dataset_kwargs)
    run_config = _run_config(config, protocol, readers, limit, batch_size)
    methods = {d.name: _as_method(_factory_for(method_factory, d.name), d.name, batch_size) for d in readers}
    lock = FolderLock(out_dir)  # one evaluation per folder; fingerprints and duplicates: records.py
    try:
        prepare_folder(out_dir, run_config, resume, _check_config, RECORDS)  # run.json + fingerprints
        records_path = out_dir / RECORDS
        if not resume and records_path.exists():
            records_path.unlink()
        existing = dedupe_records(read_records(records_path, repair=True), records_path)
    except BaseException:
        lock.release()
        raise
    done = {(r["dataset"], r["instance_id"]) for r in existing}

    plan = [(d, len(d) if limit is None else min(int(limit), len(d))) for d in readers]
    selected: set[tuple[str, str]] = set()
    with lock, open(records_path, "a", encoding="utf-8") as fout, tqdm(
        total=sum(n for _, n in plan), unit="img", disable=None if progress else True, file=sys.stderr
    ) as bar:
        for ds, n in plan:
            bar.set_description(ds.name)
            feed = _DatasetFeed(ds, n, done, selected, bar)
            for result in methods[ds.name].evaluate_items(feed.items(), batch_size, **protocol.loop_options()):
                existing.append(_write_result(fout, ds.name, result, protocol, batch_size))
                done.add((ds.name, existing[-1]["instance_id"]))
                feed.finished(result.instance_id[0])

    records = [r for r in existing if (r["dataset"], r["instance_id"]) in selected]
    summary = _summary(records, plan, run_config, protocol, device, time.perf_counter() - t_start)
    atomic_write_text(out_dir / SUMMARY, json.dumps(summary, indent=2, default=_json_default) + "\n")
    return summary


def _run_config(config: Mapping | None, protocol: EvalProtocol, readers: list, limit: int | None, batch_size: int) -> dict:
    """What ``run.json`` holds: the method's description, the protocol, the datasets and limit
    (and ``batch_size`` when above 1)."""
    run_config = {
        **dict(config or {}),
        "max_clicks": int(protocol.max_clicks),
        "stop_at_target": bool(protocol.stop_at_target),
        "pred_thr": float(protocol.pred_thr),
        "target_iou": float(protocol.target_iou),
        "datasets": [d.name for d in readers],
        "limit": limit,
    }
    if batch_size > 1:
        run_config["batch_size"] = batch_size
    return run_config


def _write_result(fout, dataset: str, result, protocol: EvalProtocol, batch_size: int) -> dict:
    """Write the record of one finished instance (its tag: image index, sample, id, mask path)."""
    _, sample, inst_id, mask_path = result.instance_id
    rec = _record(dataset, sample, inst_id, mask_path, protocol.max_clicks, result, result.wall_s)
    if batch_size > 1:
        rec["batch_size"] = batch_size
    _write(fout, rec)
    return rec


class _PredictFnMethod:
    """A ``method_factory(sample) -> predict_fn`` as an ``evaluate_items`` method (one instance at
    a time, one ``predict_fn`` per image, see :func:`icmformer.evaluation.loop.evaluate_items`)."""

    def __init__(self, factory: MethodFactory) -> None:
        self.factory = factory

    def evaluate_items(self, items: Iterable, batch_size: int = 1, **protocol) -> Iterator:
        # the item's tag is (image index, sample, instance id, mask path): one predict_fn per sample
        return evaluate_items(items, self.factory, source=lambda item: item[2][1], **protocol)


def _as_method(factory, dataset: str, batch_size: int):
    if callable(getattr(factory, "evaluate_items", None)):
        return factory
    if batch_size > 1:
        raise ValueError(
            f"batch_size={batch_size} needs a batched method (e.g. icmformer.evaluation.batched.ModelMethod) "
            f"for dataset {dataset}; got {type(factory).__name__} (use batch_size=1)"
        )
    return _PredictFnMethod(factory)


def _summary(records: list, plan: list, run_config: dict, protocol: EvalProtocol, device: str | None, run_time_s: float) -> dict:
    tables = summarize(records, max_clicks=protocol.max_clicks)
    per_ds = {}
    for ds, n in plan:
        entry = dict(tables.get(ds.name, {"instances": 0}))
        entry["images_selected"] = n
        entry["images_total"] = len(ds)
        entry["warnings"] = len(ds.warnings)
        entry["warning_messages"] = list(ds.warnings[:20])
        per_ds[ds.name] = entry
    return {
        "datasets": per_ds,
        "config": run_config,
        "device": device or describe_device(),
        "run_time_s": run_time_s,
        "records_wall_s": float(sum(r.get("wall_s", 0.0) for r in records)),
        "records": RECORDS,
        "n_records": len(records),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _record(dataset: str, sample, inst_id: str, mask_path, max_clicks: int, result, wall_s: float) -> dict:
    return {
        "dataset": dataset,
        "instance_id": inst_id,
        "image": sample.name,
        "image_path": str(sample.image_path) if sample.image_path else None,
        "mask_path": str(mask_path) if mask_path else None,
        "max_clicks": int(max_clicks),
        "n_clicks": result.n_clicks,
        "ious": result.ious,
        "method_time": result.method_times,
        "simulator_time": result.simulator_times,
        "wall_s": wall_s,
        "clicks": [c.to_list() for c in result.clicks],
    }


def _write(fout, rec: dict) -> None:
    fout.write(json.dumps(rec) + "\n")
    fout.flush()
    os.fsync(fout.fileno())


class _DatasetFeed:
    """The instances of the first ``n`` images of one dataset that have no record yet, as lazily
    loaded ``(image, gt_mask, (image index, sample, instance id, mask path))`` items; an image
    whose instances are all done is not even loaded, and the progress bar advances per image."""

    def __init__(self, ds, n: int, done: set, selected: set, bar) -> None:
        self.ds, self.n, self.done, self.selected, self.bar = ds, n, done, selected, bar
        self.pending: dict[int, int] = {}  # image index -> instances not yet written

    def _skip_if_done(self, i: int) -> bool:
        ids = self.ds.instance_ids(i)
        if ids and all((self.ds.name, k) in self.done for k in ids):
            self.selected.update((self.ds.name, k) for k in ids)
            self.bar.update(1)
            return True
        return False

    def items(self) -> Iterator[tuple]:
        name = self.ds.name
        for i in range(self.n):
            if self._skip_if_done(i):
                continue
            sample = self.ds[i]
            todo = []
            for mask, inst_id, mask_path in zip(sample.masks, sample.instance_ids, sample.mask_paths or [None] * len(sample.masks)):
                self.selected.add((name, inst_id))
                if (name, inst_id) not in self.done:
                    todo.append((mask, inst_id, mask_path))
            if not todo:
                self.bar.update(1)
                continue
            self.pending[i] = len(todo)
            for mask, inst_id, mask_path in todo:
                yield sample.image, mask, (i, sample, inst_id, mask_path)

    def finished(self, i: int) -> None:
        """One instance of image ``i`` has its record: the image counts once all have."""
        self.pending[i] -= 1
        if self.pending[i] == 0:
            del self.pending[i]
            self.bar.update(1)


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def format_table(summary: Mapping) -> str:
    """A plain-text table of a summary (one row per dataset)."""
    cols = ["instances", "NoC@85", "NoC@90", "NoF@85", "NoF@90", "SPC", "SPC_method", "simulator_s_per_click"]
    head = ["dataset", "inst", "NoC@85", "NoC@90", "NoF@85", "NoF@90", "SPC(s)", "SPC-method(s)", "sim(ms)/click"]
    rows = [head]
    for name, m in summary["datasets"].items():
        row = [name]
        for c in cols:
            v = m.get(c)
            if v is None:
                row.append("-")
            elif c == "simulator_s_per_click":
                row.append(f"{1000 * v:.2f}")
            elif isinstance(v, float):
                row.append(f"{v:.3f}" if c.startswith("SPC") else f"{v:.2f}")
            else:
                row.append(str(v))
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(cell.rjust(w) if j else cell.ljust(w) for j, (cell, w) in enumerate(zip(r, widths))) for r in rows)
