"""The DVC pipeline: params composition, stage graph, notebooks, data stage, tables and figures."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PIPELINE_NOTEBOOKS = ["data", "train", "evaluate", "complexity", "tables", "figures"]


# ------------------------------------------------------------------------------ params / stages
def test_params_yaml_is_the_composed_default_profile():
    from icmformer.pipeline.params import compose

    committed = yaml.safe_load((REPO / "params.yaml").read_text())
    assert committed == compose(conf_dir=REPO / "conf"), "params.yaml is stale: run `python -m icmformer.pipeline.params`"
    assert committed["profile"] == "demo" and committed["data"]["root"] == "data"


@pytest.mark.parametrize("profile", ["demo", "paper", "paper-smoke"])
def test_profiles_are_consistent(profile):
    from icmformer.pipeline.params import compose
    from icmformer.training.config import load_config

    p = compose([f"profile={profile}"], conf_dir=REPO / "conf")
    assert p["profile"] == profile
    for key, m in p["models"].items():
        cfg = load_config(REPO / m["config"])  # exists and validates
        assert m["model"] in __import__("icmformer").list_models(), key
        assert m["train_set"] in p["data"]["datasets"].split(","), key
        assert cfg is not None
    for key, e in p["evaluations"].items():
        assert e["model"] in p["models"], key
        assert e["dataset"] in p["data"]["datasets"].split(","), key
    evaluated = {e["model"] for e in p["evaluations"].values()} | {"grabcut"}
    for row in p["tables"]["table1"]["rows"]:
        assert row["slot"] in evaluated
    for t in ("table4", "table5"):
        for cell in p["tables"][t]["cells"]:
            assert cell["slot"] is None or cell["slot"] in evaluated  # None: a cell this profile does not train
    for key in ("generate_weights",):
        assert isinstance(p["data"][key], bool)
    assert isinstance(p["eval"]["limit"], int) and isinstance(p["train_extra"], str)
    assert isinstance(p["tables"]["table1"]["extra_rows"], list)
    assert p["figures"]["main"] in p["models"]


def test_paper_profile_switch_changes_models_and_protocol():
    from icmformer.pipeline.params import compose

    demo, paper = compose(conf_dir=REPO / "conf"), compose(["profile=paper"], conf_dir=REPO / "conf")
    assert paper["device"] == "cuda" and paper["eval"]["flip"] is True
    assert set(paper["models"]).isdisjoint(demo["models"])
    assert "mae_pretrain_vit_base.pth" in paper["data"]["weights"]


def test_paper_smoke_profile_is_the_paper_pipeline_at_a_small_size():
    from icmformer.pipeline.params import compose
    from icmformer.pipeline.weights import UPSTREAM
    from icmformer.training.config import load_config

    smoke, paper = compose(["profile=paper-smoke"], conf_dir=REPO / "conf"), compose(["profile=paper"], conf_dir=REPO / "conf")
    assert {m["model"] for m in smoke["models"].values()} == {"icmformer_vit_base_448", "icmformer_swin_base_384", "icmformer_swin_small_224"}
    for m in smoke["models"].values():
        assert m["config"].startswith("configs/paper_") and m["config"].endswith("_sbd.yaml") and m["train_set"] == "BSDS_train"
        assert 0 < m["max_steps"] <= 5
        weights = Path(load_config(REPO / m["config"]).model.pretrained_backbone).name
        assert weights in smoke["data"]["weights"].split(",") and weights in UPSTREAM
    # only the size changes: the evaluation protocol is the paper's, the overrides touch no hyper-parameter
    for key in ("zoom_in", "flip", "stop_at_target", "davis_target_size"):
        assert smoke["eval"][key] == paper["eval"][key]
    assert smoke["eval"]["max_clicks"] == 2 and smoke["data"]["generate_weights"] is True
    assert {kv.split("=")[0] for kv in smoke["train_extra"].split(";")} <= {"batch_size", "num_workers", "data.epoch_len", "log_interval"}


def test_dvc_stage_graph_resolves():
    dvc = Path(sys.executable).with_name("dvc")
    if not dvc.exists():
        pytest.skip("dvc is not installed next to this python")
    out = subprocess.run([str(dvc), "stage", "list"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    names = {line.split()[0] for line in out.stdout.splitlines() if line.strip()}
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    expected = {"data", "baseline", "complexity", "tables", "figures"}
    expected |= {f"train@{k}" for k in params["models"]} | {f"evaluate@{k}" for k in params["evaluations"]}
    assert expected <= names


# ------------------------------------------------------------------------------ notebooks
@pytest.mark.parametrize("name", PIPELINE_NOTEBOOKS)
def test_notebooks_are_clean_parameterised_and_paired(name):
    import jupytext
    import nbformat

    nb = nbformat.read(REPO / "notebooks" / f"{name}.ipynb", as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "commit notebooks without outputs"
    assert sum("parameters" in c.metadata.get("tags", []) for c in code) == 1
    paired = jupytext.read(REPO / "notebooks" / f"{name}.py")
    assert [c.source for c in paired.cells] == [c.source for c in nb.cells], f"{name}.ipynb and {name}.py differ: run jupytext --sync"


# ------------------------------------------------------------------------------ data stage
def test_data_stage_links_from_a_mirror_and_fingerprints(tmp_path, shared_data):
    from icmformer.pipeline.data import prepare_data

    root = tmp_path / "data"
    first = prepare_data(["GrabCut"], root=root, mirrors=[str(shared_data)])
    assert (root / "GrabCut").is_symlink() and (root / "GrabCut" / "data_GT").is_dir()
    entry = first["datasets"]["GrabCut"]
    assert (entry["images"], entry["instances"]) == (50, 50)
    assert entry["fingerprint"]["method"] == "MANIFEST.txt verified"
    # a second run describes the same state with the same bytes (no spurious downstream re-runs)
    assert prepare_data(["GrabCut"], root=root, mirrors=[str(shared_data)]) == first


def test_data_stage_lists_everything_missing_before_any_work(tmp_path):
    from icmformer.pipeline.data import prepare_data

    with pytest.raises(FileNotFoundError) as err:
        prepare_data(["GrabCut", "SBD"], root=tmp_path / "data", mirrors=[str(tmp_path / "nowhere")],
                     weights=["mae_pretrain_vit_base.pth"])  # fmt: skip
    msg = str(err.value)
    assert "dataset GrabCut" in msg and "GrabCut.zip" in msg
    assert "dataset SBD" in msg and "SBD/download.html" in msg
    assert "weights mae_pretrain_vit_base.pth" in msg and "dl.fbaipublicfiles.com" in msg


def test_fingerprint_detects_a_changed_file(tmp_path):
    import hashlib

    from icmformer.pipeline.data import fingerprint

    folder = tmp_path / "Set"
    (folder / "img").mkdir(parents=True)
    (folder / "img" / "a b.jpg").write_bytes(b"abc")
    digest = hashlib.sha256(b"abc").hexdigest()
    (folder / "MANIFEST.txt").write_text(f"{digest}  3  img/a b.jpg\n")
    assert fingerprint(folder)["files"] == 1
    (folder / "img" / "a b.jpg").write_bytes(b"abd")
    with pytest.raises(ValueError, match="differ from MANIFEST"):
        fingerprint(folder)
    (folder / "MANIFEST.txt").unlink()
    h1 = fingerprint(folder)["sha256"]
    (folder / "img" / "a b.jpg").write_bytes(b"abe")
    assert fingerprint(folder)["sha256"] != h1


# ------------------------------------------------------------------------------ tables
def fake_summaries():
    def s(n85, n90, nof90, curve_end):
        return {"NoC@85": n85, "NoC@90": n90, "NoF@85": 0, "NoF@90": nof90, "instances": 50,
                "mIoU@k": list(np.linspace(0.5, curve_end, 20))}  # fmt: skip

    return {"vit": {"GrabCut": s(2.0, 3.0, 1, 0.95), "Berkeley": s(4.0, 6.5, 5, 0.9)}, "grabcut": {"GrabCut": s(5.9, 6.9, 3, 0.96)}}


def test_table1_puts_the_paper_value_and_the_difference_beside_ours():
    from icmformer import reference
    from icmformer.pipeline.tables import table_noc

    rows = [{"slot": "vit", "label": "ours", "paper": {"method": "iCMFormer", "backbone": "ViT-B", "train": "SBD"}},
            {"slot": "grabcut", "label": "GrabCut", "paper": None}]  # fmt: skip
    df = table_noc(fake_summaries(), rows, ["GrabCut", "Berkeley"])
    ours = df[(df.model == "ours") & (df.dataset == "GrabCut")].iloc[0]
    paper90 = reference.paper_noc("table1", "iCMFormer", "ViT-B", "SBD", "GrabCut", "noc90")
    assert ours["NoC@90 ours"] == 3.0 and ours["NoC@90 paper"] == paper90
    assert ours["NoC@90 diff"] == pytest.approx(round(3.0 - paper90, 2))
    gc_berkeley = df[(df.model == "GrabCut") & (df.dataset == "Berkeley")].iloc[0]
    assert gc_berkeley["NoC@90 ours"] == "not run" and gc_berkeley["NoC@90 paper"] == "n/a"


def _md_cells(frame, column):
    return [str(x) for x in frame[column]]


def test_paper_tables_show_every_paper_value():
    # The context tables print each value of the paper's rows; "n/a" never stands for a paper value.
    from icmformer import reference
    from icmformer.pipeline.tables import EMPTY, paper_table, paper_table3

    t1 = paper_table("table1", [{"method": "iCMFormer"}, {"method": "RITM"}])
    rows = reference.paper_rows_where("table1", method="iCMFormer") + reference.paper_rows_where("table1", method="RITM")
    assert len(t1) == len([r for r in rows if r["status"] == "paper"]) == 8
    ritm = t1[t1["paper row"] == "RITM (HRNet-18), SBD"].iloc[0]
    assert ritm["Berkeley NoC@85"] == EMPTY and ritm["Berkeley NoC@90"] == reference.paper_noc("table1", "RITM", "HRNet-18", "SBD", "Berkeley", "noc90")
    for t in (t1, paper_table("table2"), paper_table("table4"), paper_table("table5"), paper_table3()):
        assert "n/a" not in t.astype(str).values
    t2 = paper_table("table2")
    vit = t2[t2["paper row"].str.startswith("iCMFormer ViT-B")].iloc[0]
    assert vit["SBD NoF@90"] == reference.paper_nof("iCMFormer", "ViT-B", "SBD", "SBD", "nof90")
    t3 = paper_table3()
    assert t3[t3["paper row"] == "iCMFormer ViT-B, 448"].iloc[0]["SPC ms (A40 GPU)"] == reference.paper_complexity("iCMFormer", "ViT-B", "spc")


def test_nof_table_uses_the_papers_nof90_and_marks_missing_columns():
    from icmformer import reference
    from icmformer.pipeline.tables import table_nof

    rows = [{"slot": "vit", "label": "ours", "paper": {"method": "iCMFormer", "backbone": "ViT-B", "train": "SBD"}}]
    df = table_nof(fake_summaries(), rows, ["GrabCut", "Berkeley", "DAVIS"])
    by = {r["dataset"]: r for r in df.to_dict("records")}
    assert by["GrabCut"]["NoF@90 paper"] == "-"  # the paper's Table 2 has no GrabCut column
    paper = reference.paper_nof("iCMFormer", "ViT-B", "SBD", "Berkeley", "nof90")
    assert by["Berkeley"]["NoF@90 paper"] == paper and by["Berkeley"]["NoF@90 diff"] == 5 - paper
    assert by["DAVIS"]["NoF@90 ours"] == "not run" and by["DAVIS"]["NoF@90 paper"] == reference.paper_nof("iCMFormer", "ViT-B", "SBD", "DAVIS", "nof90")


def test_extra_model_rows_come_from_an_evaluation_folder(tmp_path):
    from icmformer.pipeline.tables import add_extra_rows, table_noc

    folder = tmp_path / "demo_shipped" / "GrabCut"
    folder.mkdir(parents=True)
    folder.joinpath("summary.json").write_text(json.dumps({"datasets": {"GrabCut": fake_summaries()["vit"]["GrabCut"] | {"NoC@90": 7.5}}}))
    base = [{"slot": "vit", "label": "ours", "paper": None}]
    extra = [{"label": "shipped", "eval_dir": str(tmp_path / "demo_shipped"), "paper": {"method": "iCMFormer", "backbone": "ViT-B", "train": "SBD"}}]
    summaries, rows = add_extra_rows(fake_summaries(), base, extra)
    assert [r["label"] for r in rows] == ["ours", "shipped"] and base == [{"slot": "vit", "label": "ours", "paper": None}]
    df = table_noc(summaries, rows, ["GrabCut"])
    assert df[df.model == "shipped"].iloc[0]["NoC@90 ours"] == 7.5
    with pytest.raises(FileNotFoundError, match="no <dataset>/summary.json"):
        add_extra_rows({}, [], [{"label": "x", "eval_dir": str(tmp_path / "nowhere")}])
    with pytest.raises(ValueError, match="lacks eval_dir"):
        add_extra_rows({}, [], [{"label": "x"}])


def test_tables_are_written_with_their_profile(tmp_path):
    from icmformer.pipeline.tables import table_ablation, table_complexity, write_table

    from icmformer import reference

    df = table_ablation(fake_summaries(), [{"slot": "vit", "label": "X,Y,XY"}, {"slot": None, "label": "X,YX"}], ["GrabCut"], "table5")
    by = {(r["variant"], r["dataset"]): r for r in df.to_dict("records")}
    assert set(df["dataset"]) == {"GrabCut", "Berkeley", "SBD", "DAVIS"}  # the paper's columns are always shown
    assert by["X,Y,XY", "GrabCut"]["NoC@90 ours"] == 3.0
    assert by["X,Y,XY", "GrabCut"]["NoC@90 paper"] == reference.paper_ablation("table5", "X,Y,XY", "GrabCut", "noc90")
    assert by["X,YX", "SBD"]["NoC@90 ours"] == "not run" and by["X,YX", "SBD"]["NoC@90 paper"] == reference.paper_ablation("table5", "X,YX", "SBD", "noc90")
    t4 = table_ablation(fake_summaries(), [{"slot": "vit", "label": "ViT", "paper_label": "ViT-B with cross-modality"}], ["GrabCut"], "table4")
    assert t4[t4.dataset == "GrabCut"].iloc[0]["NoC@90 paper"] == "-"  # the paper's Table 4 has no GrabCut column
    md = write_table(df, tmp_path, "table5", "Table 5", "demo", ["a note"], [("context", df.head(1), "table5_paper")])
    text = md.read_text()
    assert "Profile **demo**" in text and "not the paper's numbers" in text and "- a note" in text
    assert "**context**" in text and (tmp_path / "table5_paper.csv").exists()
    assert (tmp_path / "table5.csv").exists()
    comp = [{"model": "m", "input_size": [448, 448], "params_m": 1.0, "paper_params_m": 0.9, "reported_params_m": 0.9,
             "gflops": 2.0, "paper_gflops": 2.1, "reported_gflops": 2.0}]  # fmt: skip
    bench = [{"model": "m", "input_size": 448, "device": "cpu", "device_name": "cpu X",
              "modes": [{"mode": "naive", "spc_s": 2.0, "ratio_to_naive": 1.0}, {"mode": "optimised", "spc_s": 1.5, "ratio_to_naive": 0.75},
                        {"mode": "bf16", "spc_s": 0.5, "ratio_to_naive": 0.25}]}]  # fmt: skip
    t3 = table_complexity(comp, bench).iloc[0]
    assert t3["GFLOPs diff % (conv. vs paper)"] == 5.0
    assert t3["SPC ratio CPU optimised/naive"] == 0.75 and t3["CPU device"] == "cpu X"
    assert t3["SPC s CPU bf16"] == 0.5 and t3["SPC ratio CPU bf16/naive"] == 0.25  # every measured mode is shown
    assert "SPC s CPU fast" not in t3 and "SPC ratio CPU naive/naive" not in t3
    vit = [{**comp[0], "model": "icmformer_vit_base_448"}]
    row = table_complexity(vit, []).iloc[0]
    assert row["SPC s paper (A40 GPU)"] == reference.paper_complexity("iCMFormer", "ViT-B", "spc") / 1000
    assert row["params M (paper)"] == reference.paper_complexity("iCMFormer", "ViT-B", "params_m")


# ------------------------------------------------------------------------------ figures
def test_figures_from_summaries_and_records(tmp_path):
    from icmformer.pipeline import figures as F

    from icmformer import reference

    labels = {"vit": "ours", "grabcut": "GrabCut"}
    p = F.fig_miou_vs_clicks(fake_summaries(), labels, ["GrabCut", "Berkeley"], tmp_path / "fig4.png")
    assert p.stat().st_size > 5000
    rows = [{"slot": "vit", "label": "ours", "paper": {"method": "iCMFormer", "backbone": "ViT-B", "train": "SBD"}},
            {"slot": "grabcut", "label": "GrabCut", "paper": None}]  # fmt: skip
    points = F.paper_noc_points(rows, ["GrabCut", "Berkeley"])
    assert set(points) == {"ours"}
    assert points["ours"]["Berkeley"]["noc90"] == reference.paper_noc("table1", "iCMFormer", "ViT-B", "SBD", "Berkeley", "noc90")
    p2 = F.fig_miou_vs_clicks(fake_summaries(), labels, ["GrabCut", "Berkeley"], tmp_path / "fig4p.png", paper_points=points)
    assert p2.read_bytes() != p.read_bytes()
    records = {"vit": [{"dataset": "GrabCut", "ious": [0.5, 0.86, 0.91]}, {"dataset": "GrabCut", "ious": [0.2] * 20}]}
    df = F.noc_frame(records, labels)
    assert sorted(df["NoC@90"]) == [3, 20]
    assert F.fig_noc_distribution(records, labels, tmp_path / "noc.png").exists()
    with pytest.raises(ValueError, match="no mIoU curves"):
        F.fig_miou_vs_clicks({}, labels, ["GrabCut"], tmp_path / "x.png")


def test_fig4_alone_from_params_and_summaries(tmp_path, capsys):
    from icmformer.pipeline import figures as F

    for slot, per_ds in fake_summaries().items():
        for ds, summary in per_ds.items():
            (tmp_path / "eval" / slot / ds).mkdir(parents=True)
            (tmp_path / "eval" / slot / ds / "summary.json").write_text(json.dumps({"datasets": {ds: summary}}))
    params = {"tables": {"table1": {"datasets": ["GrabCut", "Berkeley"], "extra_rows": [], "rows": [
        {"slot": "vit", "label": "ours", "paper": {"method": "iCMFormer", "backbone": "ViT-B", "train": "SBD"}},
        {"slot": "grabcut", "label": "GrabCut", "paper": None}]}}}  # fmt: skip
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = tmp_path / "fig4.png"
    assert F.main(["fig4", "--params", str(tmp_path / "params.yaml"), "--eval-dir", str(tmp_path / "eval"), "--out", str(out)]) == 0
    assert out.stat().st_size > 5000
    assert F.main(["fig4", "--params", str(tmp_path / "nope.yaml")]) == 1
    assert "params file not found" in capsys.readouterr().err


def test_qualitative_and_attention_figures_with_a_tiny_model(tmp_path):
    from icmformer import create_model
    from icmformer.data.sample import Sample
    from icmformer.models.registry import tiny_overrides
    from icmformer.pipeline import figures as F

    model = create_model("icmformer_vit_base_448", **tiny_overrides("icmformer_vit_base_448")).eval()
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (80, 96, 3), dtype=np.uint8)
    gt = np.zeros((80, 96), np.int32)
    gt[20:50, 10:30] = 1
    gt[25:60, 60:90] = 1  # two disconnected parts
    sample = Sample(image=image, masks=[gt], name="toy")
    run = F.click_by_click(model, sample, max_clicks=3, flip=False)
    assert len(run["frames"]) == 3 and run["frames"][2]["mask"].shape == gt.shape
    assert len(run["frames"][2]["clicks"]) == 3
    assert F.fig_click_by_click([run], [1, 3], tmp_path / "fig5.png", "t").exists()

    class One:
        def __len__(self):
            return 1

        def __getitem__(self, i):
            return sample

    assert F.multi_part_instances(One(), min_parts=2) == [(0, 0)]
    assert F.fig_attention(model, sample, tmp_path / "attn.png").exists()
    nocross = create_model("icmformer_vit_base_448", **{**tiny_overrides("icmformer_vit_base_448"), "cross_modality": False}).eval()
    with pytest.raises(ValueError, match="no cross-modality blocks"):
        F.fig_attention(nocross, sample, tmp_path / "attn2.png")


# ------------------------------------------------------------------------------ README
def test_readme_results_block_matches_the_regenerated_tables():
    from icmformer.pipeline.readme import END, START, render

    text = (REPO / "README.md").read_text()
    if not (REPO / "results" / "tables" / "table1.md").exists():
        pytest.skip("results/tables not generated in this checkout (run dvc repro)")
    block = text[text.index(START): text.index(END) + len(END)]
    assert block == render(REPO / "results"), "README results are stale: run `python -m icmformer.pipeline.readme`"


def test_readme_refresh_rewrites_only_the_block(tmp_path):
    from icmformer.pipeline.readme import END, START, refresh

    (tmp_path / "results" / "tables").mkdir(parents=True)
    (tmp_path / "results" / "tables" / "table1.md").write_text("## Table 1\n\n| a |\n|---|\n| 1 |\n")
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{START}\nold\n{END}\noutro\n")
    assert refresh(readme, tmp_path / "results") is True
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "#### Table 1" in text and "old" not in text
    assert refresh(readme, tmp_path / "results") is False
