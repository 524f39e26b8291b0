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
# # Evaluate: one model (or baseline) on one dataset with the standard click protocol
#
# First click at the object's interior point farthest from the boundary, each next click in the
# largest error region; NoC@85/90, NoF, mIoU@k and seconds per click. The logic is `icmformer evaluate`.

# %% tags=["parameters"]
method = "model"  # model | grabcut
checkpoint = "results/runs/vit/model.safetensors"
dataset = "GrabCut"
data_root = "data"
out_dir = "results/eval/vit/GrabCut"
max_clicks = 20
zoom_in = True
flip = True
stop_at_target = False
device = "cpu"
davis_target_size = 0  # 0: 1.5x the model input size (the official 672 for 448)
limit = 0  # images per dataset, 0: all

# %%
from pathlib import Path

import json

import matplotlib.pyplot as plt

from icmformer.cli import main as icmformer


def as_bool(value):
    return str(value).strip().lower() in {"1", "true", "yes", "on"}


args = ["evaluate", "--method", method, "--datasets", dataset, "--data-root", data_root, "--out", out_dir,
        "--max-clicks", str(max_clicks), "--device", device, "--quiet"]
if method == "model":
    args += ["--checkpoint", checkpoint]
if not as_bool(zoom_in):
    args.append("--no-zoom-in")
if not as_bool(flip):
    args.append("--no-flip")
if as_bool(stop_at_target):
    args.append("--stop-at-target")
if int(davis_target_size) > 0:
    args += ["--davis-target-size", str(int(davis_target_size))]
if int(limit):
    args += ["--limit", str(int(limit))]
status = icmformer(args)
if status != 0:
    raise RuntimeError(f"icmformer {' '.join(args)} failed with status {status}")

# %%
import pandas as pd

summaries = json.loads((Path(out_dir) / "summary.json").read_text())["datasets"]
keys = ("instances", "NoC@85", "NoC@90", "NoF@85", "NoF@90", "SPC", "SPC_method")
pd.DataFrame({name: {k: s[k] for k in keys} for name, s in summaries.items()}).T

# %%
fig, ax = plt.subplots(figsize=(4, 3))
for name, s in summaries.items():
    ax.plot(range(1, len(s["mIoU@k"]) + 1), s["mIoU@k"], marker="o", label=name)
ax.set(xlabel="clicks", ylabel="mIoU", title="mIoU vs clicks", ylim=(0, 1))
ax.legend()
plt.show()
