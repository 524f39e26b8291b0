# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Tables 1-5
#
# Built from the evaluation summaries (`results/eval/<model>/<dataset>/summary.json`), the
# complexity measurements and the paper's published numbers (`icmformer/reference/paper.yaml`,
# with provenance). Each table states its profile and puts the paper's value beside ours.

# %% tags=["parameters"]
profile = "demo"
params_file = "params.yaml"
eval_dir = "results/eval"
complexity_file = "results/complexity/complexity.json"
bench_file = "results/complexity/bench.json"
out_dir = "results/tables"

# %%
import json
from pathlib import Path

import yaml
from IPython.display import Markdown, display

from icmformer.pipeline import tables as T

params = yaml.safe_load(Path(params_file).read_text())
spec = params["tables"]
summaries = T.load_summaries(eval_dir)
missing = [r["slot"] for r in spec["table1"]["rows"] if r["slot"] not in summaries]
if missing:
    raise FileNotFoundError(f"no evaluation summaries for {missing} under {eval_dir}")
# extra model rows (label + evaluation folder) from params: tables.table1.extra_rows
summaries, rows = T.add_extra_rows(summaries, spec["table1"]["rows"], spec["table1"].get("extra_rows"))
context = spec["table1"].get("paper_rows")  # which of the paper's own rows to print for context

# %%
from icmformer.pipeline.figures import miou_frame

labels = {r["slot"]: r["label"] for r in rows}
Path(out_dir).mkdir(parents=True, exist_ok=True)
miou_frame(summaries, labels, spec["table1"]["datasets"]).to_csv(Path(out_dir, "miou_curves.csv"), index=False)

# %%
t1 = T.table_noc(summaries, rows, spec["table1"]["datasets"])
T.write_table(t1, out_dir, "table1", "Table 1: NoC@85 / NoC@90 (clicks to reach 85% / 90% IoU, at most 20)", profile,
              spec["table1"].get("notes", []),
              [("The paper's Table 1 (its own rows, for context; - = left empty in the paper)",
                T.paper_table("table1", context), "table1_paper")])
display(Markdown(Path(out_dir, "table1.md").read_text()))

# %%
t2 = T.table_nof(summaries, rows, spec["table1"]["datasets"])
T.write_table(t2, out_dir, "table2", "Table 2: NoF (objects still below 90% / 85% IoU after 20 clicks)", profile,
              spec["table2"].get("notes", []),
              [("The paper's Table 2 (NoF@90, SBD-trained; - = left empty in the paper)", T.paper_table("table2"), "table2_paper")])
display(Markdown(Path(out_dir, "table2.md").read_text()))

# %%
complexity = json.loads(Path(complexity_file).read_text())
bench = json.loads(Path(bench_file).read_text())
t3 = T.table_complexity(complexity, bench)
T.write_table(t3, out_dir, "table3", "Table 3: parameters, FLOPs and seconds per click (SPC)", profile,
              spec["table3"].get("notes", []),
              [("The paper's Table 3 (SPC in ms on its NVIDIA A40 GPU)", T.paper_table3(), "table3_paper")])
display(Markdown(Path(out_dir, "table3.md").read_text()))

# %%
for n in ("table4", "table5"):
    df = T.table_ablation(summaries, spec[n]["cells"], spec[n]["datasets"], n)
    T.write_table(df, out_dir, n, spec[n]["title"], profile, spec[n].get("notes", []))
    display(Markdown(Path(out_dir, f"{n}.md").read_text()))
