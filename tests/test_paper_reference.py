"""Structure and sanity of the paper's published numbers (icmformer/reference/paper.yaml).

The values themselves come from the paper (or a named source that quotes it); these tests
check that the file is well formed, that every number is in a plausible range and obeys the
metrics' invariants, and that the accessors fail loudly on bad keys. They do not hard-code
copies of the values.
"""
from __future__ import annotations

import math

import pytest

from icmformer import reference as ref

NOC_TABLES = ("table1", "table4", "table5")
ROW_TABLES = ("table1", "table2", "table3", "table4", "table5")
NUMERIC_STATUSES = {"paper", "secondary", "reproduced"}


@pytest.fixture(scope="module")
def data():
    return ref.load_paper_numbers()


def _numbers(values):
    """Yield (path, value) for every leaf of a row's values mapping."""
    for k, v in (values or {}).items():
        if isinstance(v, dict):
            for m, x in v.items():
                yield f"{k}.{m}", x
        else:
            yield k, v


def test_loads_with_source_and_legend(data):
    assert data["schema_version"] == 1
    src = data["source"]
    for key in ("title", "authors", "arxiv", "url", "retrieved", "note"):
        assert src.get(key), key
    assert str(src["arxiv"]) == "2307.02280"
    assert set(data["status_legend"]) == set(ref.STATUSES)
    assert set(ref.table_names()) == set(ROW_TABLES)


def test_load_returns_a_copy():
    mine = ref.load_paper_numbers()
    mine["table1"]["rows"].clear()
    assert ref.load_paper_numbers()["table1"]["rows"]


@pytest.mark.parametrize("table", ROW_TABLES)
def test_table_structure(data, table):
    spec = data[table]
    for key in ("title", "caption", "caption_status", "rows"):
        assert key in spec, key
    assert spec["rows"], "every table lists at least its expected rows"
    metrics = spec.get("metrics") or spec.get("quantities")
    assert metrics
    declared = spec.get("datasets")
    if declared is not None:
        assert set(declared) <= set(ref.KNOWN_DATASETS)
    for row in spec["rows"]:
        assert row.get("label"), row
        assert "label_is_paper_text" in row, row["label"]
        assert row["status"] in ref.STATUSES, row["label"]
        assert isinstance(row.get("values"), dict), row["label"]
        numbers = [x for _, x in _numbers(row["values"])]
        if row["status"] == "missing":
            assert all(x is None for x in numbers), f"{row['label']}: missing row with a value"
        else:
            assert row.get("provenance"), f"{row['label']}: a value without provenance"
            assert any(x is not None for x in numbers), row["label"]
        if table == "table3":
            assert set(row["values"]) <= set(spec["quantities"]), row["label"]
        else:
            for ds, cell in row["values"].items():
                if declared is not None:
                    assert ds in declared, (row["label"], ds)
                else:
                    assert ds in ref.KNOWN_DATASETS, (row["label"], ds)
                assert set(cell) <= set(metrics), (row["label"], ds)


@pytest.mark.parametrize("table", ROW_TABLES)
def test_row_keys_unique(data, table):
    keys = ("method", "backbone", "train", "input_size", "variant", "hierarchical",
            "cross_modality")
    seen = set()
    for row in data[table]["rows"]:
        k = tuple(row.get(x) for x in keys)
        assert k not in seen, f"{table}: duplicate row {row['label']}"
        seen.add(k)


def test_numbers_are_sane(data):
    sizes = data["dataset_sizes"]
    for table in ROW_TABLES:
        for row in data[table]["rows"]:
            for path, x in _numbers(row["values"]):
                if x is None:
                    continue
                assert isinstance(x, (int, float)) and not isinstance(x, bool), (table, path)
                assert math.isfinite(x), (table, path)
                metric = path.split(".")[-1]
                if metric.startswith("noc"):
                    assert 1.0 <= x <= 20.0, (table, row["label"], path, x)
                elif metric.startswith("nof"):
                    ds = path.split(".")[0]
                    assert float(x).is_integer() and 0 <= x <= sizes[ds], (table, path, x)
                elif metric == "params_m":
                    assert 1.0 < x < 1000.0, (row["label"], x)
                elif metric == "flops_g":
                    assert 1.0 < x < 10000.0, (row["label"], x)
                elif metric == "spc":
                    assert 0.0 < x < 100000.0, (row["label"], x)
                else:  # pragma: no cover - a new metric must get its own range here
                    pytest.fail(f"no sanity range for {table}.{path}")


def test_metric_invariants(data):
    # More clicks are needed for a stricter IoU, and fail more often.
    for table in ROW_TABLES:
        for row in data[table]["rows"]:
            if table == "table3":
                continue
            for ds, cell in row["values"].items():
                for lo, hi in (("noc85", "noc90"), ("nof85", "nof90")):
                    if cell.get(lo) is not None and cell.get(hi) is not None:
                        assert cell[lo] <= cell[hi], (table, row["label"], ds)


def test_our_method_has_rows(data):
    ours = [r for r in data["table1"]["rows"] if r.get("ours")]
    assert {r["backbone"] for r in ours} >= {"ViT-B"}
    assert {r["train"] for r in ours if r["backbone"] == "ViT-B"} == {"SBD", "COCO+LVIS"}
    assert {r.get("variant") for r in data["table5"]["rows"]} == {"X,YX", "X,XY", "X,Y,YX", "X,Y,XY"}
    cells = {(r["hierarchical"], r["cross_modality"]) for r in data["table4"]["rows"]}
    assert cells == {(False, False), (False, True), (True, False), (True, True)}


def test_accessors_agree_with_the_file(data):
    for row in data["table1"]["rows"]:
        for ds, cell in row["values"].items():
            for metric, x in cell.items():
                got = ref.paper_noc("table1", row["method"], row["backbone"], row["train"], ds, metric)
                assert got == (None if x is None else float(x))
    for row in data["table3"]["rows"]:
        for q, x in row["values"].items():
            got = ref.paper_complexity(row["method"], row["backbone"], q, row["input_size"])
            assert got == (None if x is None else float(x))
    for table in ("table4", "table5"):
        for row in data[table]["rows"]:
            got = ref.paper_ablation(table, row.get("variant") or row["label"], "DAVIS", "noc90")
            if row["status"] == "missing":
                assert got is None


def test_accessor_aliases():
    a = ref.paper_noc("table1", "iCMFormer", "ViT-B", "COCO+LVIS", "DAVIS", "noc90")
    assert ref.paper_noc("1", "icmformer", "vit-b", "cocolvis", "davis", "NoC@90") == a
    assert ref.paper_noc("table1", "iCMFormer", "ViT-B", "C+L", "DAVIS", "NoC@0.90") == a
    assert ref.paper_status("table1", method="iCMFormer", backbone="ViT-B", train="SBD") in ref.STATUSES


@pytest.mark.parametrize(
    "call, must_mention",
    [
        (lambda: ref.paper_noc("table1", "iCMFormer", "ViT-Q", "SBD", "DAVIS", "noc90"), ["ViT-B", "Swin-B"]),
        (lambda: ref.paper_noc("table1", "NoSuchNet", "ViT-B", "SBD", "DAVIS", "noc90"), ["iCMFormer", "SimpleClick"]),
        (lambda: ref.paper_noc("table1", "iCMFormer", "ViT-B", "ADE20k", "DAVIS", "noc90"), ["SBD", "COCO+LVIS"]),
        (lambda: ref.paper_noc("table1", "iCMFormer", "ViT-B", "SBD", "Kvasir", "noc90"), ["GrabCut", "DAVIS"]),
        (lambda: ref.paper_noc("table1", "iCMFormer", "ViT-B", "SBD", "DAVIS", "noc99"), ["noc85", "noc90"]),
        (lambda: ref.paper_noc("table7", "iCMFormer", "ViT-B", "SBD", "DAVIS", "noc90"), ["table1", "table5"]),
        (lambda: ref.paper_nof("iCMFormer", "ViT-B", "SBD", "Kvasir", "nof90"), ["Berkeley", "SBD", "DAVIS"]),
        (lambda: ref.paper_nof("iCMFormer", "ViT-B", "SBD", "DAVIS", "nof85"), ["nof90"]),
        (lambda: ref.paper_complexity("iCMFormer", "ViT-B", "latency"), ["params_m", "flops_g", "spc"]),
        (lambda: ref.paper_complexity("iCMFormer", "ViT-Q", "params_m"), ["ViT-B"]),
        (lambda: ref.paper_ablation("table5", "X,Z", "DAVIS", "noc90"), ["X,Y,XY", "X,YX"]),
        (lambda: ref.paper_ablation("table1", "X,Y,XY", "DAVIS", "noc90"), ["table4", "table5"]),
        (lambda: ref.paper_row("table1", method="iCMFormer", backbone="ViT-B"), ["SBD", "COCO+LVIS"]),
        (lambda: ref.paper_row("table1", colour="red"), ["method", "backbone"]),
    ],
)
def test_bad_keys_raise_with_choices(call, must_mention):
    with pytest.raises(KeyError) as exc:
        call()
    message = str(exc.value)
    for word in must_mention:
        assert word in message, (word, message)


# ------------------------------------------------------------------------------ against the transcription
def _paper_tables_md():
    """The project's transcription of the paper's tables (../shared/reference/PAPER_TABLES.md)."""
    import os
    from pathlib import Path

    env = os.environ.get("ICMFORMER_SHARED_REFERENCE")
    repo = Path(__file__).resolve().parents[1]
    for folder in ([Path(env)] if env else []) + [repo.parent / "shared" / "reference"]:
        if (folder / "PAPER_TABLES.md").is_file():
            return (folder / "PAPER_TABLES.md").read_text()
    pytest.skip("PAPER_TABLES.md not found: set ICMFORMER_SHARED_REFERENCE or place it at ../shared/reference")


def _md_tables(text):
    """Every markdown table of ``text`` as a list of rows (header first, separator rows dropped)."""
    tables, cur = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not set("".join(cells)) <= set("-: "):
                cur.append(cells)
        elif cur:
            tables.append(cur)
            cur = []
    return tables


def _md_num(cell):
    return None if cell == "-" else float(cell.split()[0].rstrip("MG"))


def test_every_value_of_the_paper_tables_is_in_paper_yaml(data):
    t1_ours, t1_other, t2, t3, t4, t5 = _md_tables(_paper_tables_md())[:6]
    datasets = ["GrabCut", "Berkeley", "SBD", "DAVIS"]
    n_paper = {t: sum(r["status"] == "paper" for r in data[t]["rows"]) for t in ROW_TABLES}

    def check_noc(row, cells):
        for i, ds in enumerate(datasets):
            for j, metric in enumerate(("noc85", "noc90")):
                want = _md_num(cells[2 * i + j])
                got = ref.paper_noc("table1", row["method"], row["backbone"], row["train"], ds, metric)
                assert got == want, (row, ds, metric, got, want)

    for train, backbone, *cells in t1_ours[1:]:
        row = ref.paper_row("table1", method="iCMFormer", backbone=backbone, train=train)
        assert row["status"] == "paper"
        check_noc(row, cells)
    for method, venue, backbone, train, *cells in t1_other[1:]:
        row = ref.paper_row("table1", method=method, backbone=backbone, train=train)
        assert row["status"] == "paper" and row["venue"] == venue
        check_noc(row, cells)
    assert n_paper["table1"] == len(t1_ours) - 1 + len(t1_other) - 1

    header = t2[0][1:]
    for method, *cells in t2[1:]:
        crit = {"method": "iCMFormer", "backbone": method.split()[1]} if method.startswith("iCMFormer") else {"method": method}
        for ds, cell in zip(header, cells):
            assert ref.paper_value("table2", ds, "nof90", **crit) == _md_num(cell), (method, ds)
    assert n_paper["table2"] == len(t2) - 1

    for model, size, params, flops, spc in t3[1:]:
        backbone, _, method = model.partition(" (")
        method = method.rstrip(")") or None
        if method is None:
            method, backbone = backbone.split()
        for q, cell in (("params_m", params), ("flops_g", flops), ("spc", spc)):
            assert ref.paper_complexity(method, backbone, q, int(size)) == _md_num(cell), (model, q)
    assert n_paper["table3"] == len(t3) - 1

    for cross, hier, *cells in t4[1:]:
        row = ref.paper_row("table4", cross_modality=cross == "yes", hierarchical=hier == "yes")
        for ds, cell in zip(t4[0][2:], cells):
            assert ref.paper_ablation("table4", row["label"], ds, "noc90") == _md_num(cell), (row["label"], ds)
    for variant, *cells in t5[1:]:
        for ds, cell in zip(t5[0][1:], cells):
            assert ref.paper_ablation("table5", variant.split(" (")[0], ds, "noc90") == _md_num(cell), (variant, ds)
    assert n_paper["table4"] == len(t4) - 1 and n_paper["table5"] == len(t5) - 1
