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
# # Figures
#
# Fig. 4 (mIoU vs clicks), per-instance NoC distributions, Fig. 5 (click-by-click examples),
# Fig. 6 (objects made of disconnected parts) and the cross-attention maps of the main model.

# %% tags=["parameters"]
params_file = "params.yaml"
eval_dir = "results/eval"
data_root = "data"
main_checkpoint = "results/runs/vit/model.safetensors"
out_dir = "results/figures"
qualitative = "GrabCut:0,Berkeley:3,DAVIS:10"  # dataset:image index for Fig. 5
multi_part_dataset = "DAVIS"
steps = "1,2,3,5,10"

# %%
from pathlib import Path

import yaml
from IPython.display import Image, display

from icmformer import load_checkpoint
from icmformer.data.datasets import get_dataset
from icmformer.pipeline import figures as F
from icmformer.pipeline.tables import add_extra_rows, load_summaries

params = yaml.safe_load(Path(params_file).read_text())
table1 = params["tables"]["table1"]
# the table rows plus the extra model rows (label + evaluation folder) of tables.table1.extra_rows
summaries, rows = add_extra_rows(load_summaries(eval_dir), table1["rows"], table1.get("extra_rows"))
labels = {r["slot"]: r["label"] for r in rows}
folders = {r["slot"]: Path(r.get("eval_dir") or Path(eval_dir, r["slot"])) for r in rows}
datasets = table1["datasets"]
out = Path(out_dir)

# %%
display(Image(F.fig4_from_params(params, eval_dir, out / "fig4_miou_vs_clicks.png")))

# %%
records = {}
for slot in labels:
    found = []
    for p in sorted(folders[slot].glob("*/records.jsonl")):
        found.extend(F.read_records(p))
    if found:
        records[slot] = found
display(Image(F.fig_noc_distribution(records, labels, out / "noc_distribution.png")))

# %%
model = load_checkpoint(main_checkpoint)
step_list = [int(s) for s in steps.split(",")]
runs = []
for item in qualitative.split(","):
    name, _, index = item.partition(":")
    ds = get_dataset(name, data_root)
    runs.append(F.click_by_click(model, ds[int(index)], max_clicks=max(step_list)))
display(Image(F.fig_click_by_click(runs, step_list, out / "fig5_click_by_click.png", "Click-by-click (main model)")))

# %%
ds = get_dataset(multi_part_dataset, data_root)
picks = F.multi_part_instances(ds, min_parts=2, limit=3)
runs = [F.click_by_click(model, ds[i], instance=j, max_clicks=max(step_list)) for i, j in picks]
display(Image(F.fig_click_by_click(runs, step_list, out / "fig6_multi_part.png",
                                   f"Objects with disconnected parts ({multi_part_dataset})")))

# %%
sample = get_dataset(qualitative.split(",")[0].split(":")[0], data_root)[0]
display(Image(F.fig_attention(model, sample, out / "attention_maps.png")))
