"""The iCMFormer paper's published numbers, read from ``paper.yaml`` with their provenance.

Each table row carries a ``status`` (``paper``, ``secondary``, ``reproduced`` or ``missing``;
see ``status_legend`` in the YAML). Every row of the paper's Tables 1-5 has status ``paper``;
``None`` in such a row is a cell the paper leaves empty.

Example::

    >>> from icmformer.reference import paper_noc, paper_complexity
    >>> paper_noc("table1", "iCMFormer", "ViT-B", "SBD", "DAVIS", "noc90")
    5.58
    >>> paper_complexity("iCMFormer", "ViT-B", "params_m")
    124.81

Lookups are case-insensitive and accept common aliases ("NoC@90", "C+L", "cocolvis").
A key that matches nothing raises :class:`KeyError` listing the available choices.
"""
from __future__ import annotations

import copy
import functools
import importlib.resources
from typing import Any

import yaml

__all__ = [
    "load_paper_numbers",
    "table_names",
    "paper_rows",
    "paper_row",
    "paper_rows_where",
    "paper_status",
    "paper_value",
    "paper_noc",
    "paper_nof",
    "paper_complexity",
    "paper_ablation",
    "KNOWN_DATASETS",
    "STATUSES",
]

TABLES = ("table1", "table2", "table3", "table4", "table5")
STATUSES = ("paper", "secondary", "reproduced", "missing")
KNOWN_DATASETS = ("GrabCut", "Berkeley", "SBD", "DAVIS", "PascalVOC", "COCO_MVal")
_ROW_KEYS = ("method", "backbone", "train", "input_size", "variant", "label",
             "hierarchical", "cross_modality")

_TRAIN_ALIASES = {
    "sbd": "sbd",
    "coco+lvis": "coco+lvis",
    "cocolvis": "coco+lvis",
    "coco_lvis": "coco+lvis",
    "coco-lvis": "coco+lvis",
    "c+l": "coco+lvis",
}


@functools.lru_cache(maxsize=1)
def _load() -> dict:
    text = importlib.resources.files(__name__).joinpath("paper.yaml").read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError("paper.yaml does not hold a mapping")
    return data


def load_paper_numbers() -> dict:
    """The whole of ``paper.yaml`` as a dict (a fresh copy; mutating it changes nothing)."""
    return copy.deepcopy(_load())


def table_names() -> list[str]:
    return [t for t in TABLES if t in _load()]


def _norm(value: Any) -> Any:
    if isinstance(value, str):
        return value.strip().lower().replace(" ", "")
    return value


def _norm_train(value: Any) -> Any:
    v = _norm(value)
    return _TRAIN_ALIASES.get(v, v) if isinstance(v, str) else v


def _norm_metric(metric: str) -> str:
    m = str(metric).strip().lower()
    for ch in ("@", "%", " ", "_", "-"):
        m = m.replace(ch, "")
    if m.startswith(("noc", "nof")) and m[3:].startswith("0."):
        # "NoC@0.90" -> "noc90"
        m = m[:3] + m[5:]
    return m


def _table(table: str) -> dict:
    data = _load()
    key = _norm(table)
    if isinstance(key, str) and key.isdigit():
        key = f"table{key}"
    if key not in TABLES or key not in data:
        raise KeyError(f"unknown table {table!r}; available: {', '.join(table_names())}")
    return data[key]


def _matches(row: dict, key: str, want: Any) -> bool:
    have = row.get(key)
    if key == "train":
        return _norm_train(have) == _norm_train(want)
    if key == "input_size" and want is not None and have is not None:
        return int(have) == int(want)
    return _norm(have) == _norm(want)


def _describe(row: dict) -> str:
    parts = [f"{k}={row[k]!r}" for k in _ROW_KEYS if k in row and k != "label"]
    return "(" + ", ".join(parts) + ")" if parts else repr(row.get("label"))


def paper_rows(table: str) -> list[dict]:
    """All rows of a table (copies)."""
    return copy.deepcopy(_table(table)["rows"])


def _find_row(table: str, criteria: dict) -> dict:
    rows = _table(table)["rows"]
    criteria = {k: v for k, v in criteria.items() if v is not None}
    unknown = [k for k in criteria if k not in _ROW_KEYS]
    if unknown:
        raise KeyError(f"unknown row key(s) {unknown}; row keys are {', '.join(_ROW_KEYS)}")
    hits = [r for r in rows if all(_matches(r, k, v) for k, v in criteria.items())]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        # Say which key failed first, and what it could have been.
        narrowed = rows
        for k, v in criteria.items():
            nxt = [r for r in narrowed if _matches(r, k, v)]
            if not nxt:
                choices = sorted({repr(r.get(k)) for r in narrowed})
                raise KeyError(
                    f"{table}: no row with {k}={v!r} (given {criteria}); "
                    f"available {k}: {', '.join(choices)}; rows: "
                    + "; ".join(_describe(r) for r in rows)
                )
            narrowed = nxt
    raise KeyError(
        f"{table}: {len(hits)} rows match {criteria}, add a key to choose one of: "
        + "; ".join(_describe(r) for r in hits)
    )


def paper_rows_where(table: str, **criteria: Any) -> list[dict]:
    """All rows of ``table`` matching every given key (copies; none is an empty list)."""
    unknown = [k for k in criteria if k not in _ROW_KEYS]
    if unknown:
        raise KeyError(f"unknown row key(s) {unknown}; row keys are {', '.join(_ROW_KEYS)}")
    return [copy.deepcopy(r) for r in _table(table)["rows"] if all(_matches(r, k, v) for k, v in criteria.items())]


def paper_row(table: str, **criteria: Any) -> dict:
    """The one row of ``table`` matching all given keys (method=, backbone=, train=, ...)."""
    return copy.deepcopy(_find_row(table, criteria))


def paper_status(table: str, **criteria: Any) -> str:
    """The provenance status of a row: 'paper', 'secondary', 'reproduced' or 'missing'."""
    return _find_row(table, criteria)["status"]


def _lookup_dataset_metric(table: str, row: dict, dataset: str, metric: str) -> float | None:
    spec = _table(table)
    metrics = spec.get("metrics") or []
    m = _norm_metric(metric)
    if m not in metrics:
        raise KeyError(f"{table}: unknown metric {metric!r}; available: {', '.join(metrics)}")
    declared = spec.get("datasets")
    universe = list(declared) if declared else list(KNOWN_DATASETS)
    by_norm = {_norm(d): d for d in universe}
    name = by_norm.get(_norm(dataset))
    if name is None:
        which = "datasets" if declared else "known datasets (this table's columns were not retrieved)"
        raise KeyError(f"{table}: unknown dataset {dataset!r}; {which}: {', '.join(universe)}")
    cell = (row.get("values") or {}).get(name)
    if cell is None:
        return None
    value = cell.get(m)
    return None if value is None else float(value)


def paper_value(table: str, dataset: str, metric: str, **criteria: Any) -> float | None:
    """A per-dataset metric of the row matching ``criteria``; None if not retrieved."""
    return _lookup_dataset_metric(table, _find_row(table, criteria), dataset, metric)


def paper_noc(table: str, method: str, backbone: str, train: str, dataset: str,
              metric: str) -> float | None:
    """NoC of ``method``/``backbone`` trained on ``train``, on ``dataset``; None if not retrieved.

    ``metric`` is 'noc85' or 'noc90' (aliases such as 'NoC@90' are accepted).
    """
    return paper_value(table, dataset, metric, method=method, backbone=backbone, train=train)


def paper_nof(method: str, backbone: str, train: str, dataset: str, metric: str,
              table: str = "table2") -> float | None:
    """NoF (objects needing >= 20 clicks) from Table 2; None if not retrieved."""
    return paper_value(table, dataset, metric, method=method, backbone=backbone, train=train)


def paper_complexity(method: str, backbone: str, quantity: str,
                     input_size: int | None = None) -> float | None:
    """Table 3: 'params_m' (millions), 'flops_g' (GFLOPs) or 'spc'; None if not retrieved."""
    spec = _table("table3")
    q = _norm(quantity)
    aliases = {"params": "params_m", "flops": "flops_g", "gflops": "flops_g"}
    q = aliases.get(q, q)
    if q not in spec["quantities"]:
        raise KeyError(f"table3: unknown quantity {quantity!r}; available: "
                       f"{', '.join(spec['quantities'])}")
    row = _find_row("table3", {"method": method, "backbone": backbone, "input_size": input_size})
    value = row["values"].get(q)
    return None if value is None else float(value)


def paper_ablation(table: str, label: str, dataset: str, metric: str) -> float | None:
    """Table 4 or 5 value of the row whose ``label`` (or ``variant``) matches; None if missing."""
    t = _norm(table)
    if t not in ("table4", "table5", "4", "5"):
        raise KeyError(f"ablation tables are table4 and table5, not {table!r}")
    t = t if t.startswith("table") else f"table{t}"
    rows = _table(t)["rows"]
    hits = [r for r in rows if _norm(label) in (_norm(r.get("label")), _norm(r.get("variant")))]
    if len(hits) != 1:
        raise KeyError(f"{t}: no row labelled {label!r}; available: "
                       + ", ".join(repr(r.get("variant") or r["label"]) for r in rows))
    return _lookup_dataset_metric(t, hits[0], dataset, metric)
