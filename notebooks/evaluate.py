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
# largest error region; NoC@85/90, NoF, mIoU@k and seconds per click. The logic is
# `icmformer.evaluation.methods.evaluate` (as `icmformer evaluate`).

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
batch_size = 1  # instances evaluated together (same results; faster for small models)

# %%
import matplotlib.pyplot as plt

from icmformer.evaluation.methods import evaluate
from icmformer.evaluation.protocol import DEFAULT_PROTOCOL
from icmformer.pipeline.params import as_bool

# the standard protocol (icmformer.evaluation.protocol), with this run's parameters
protocol = DEFAULT_PROTOCOL.with_(
    max_clicks=int(max_clicks), zoom_in=as_bool(zoom_in), flip=as_bool(flip), stop_at_target=as_bool(stop_at_target),
    davis_target_size=int(davis_target_size) or None,
)
model_options = dict(checkpoint=checkpoint, device=device) if method == "model" else {}
summary = evaluate(dataset, data_root, out_dir, method, protocol, batch_size=int(batch_size), limit=int(limit) or None,
                   progress=False, **model_options)

# %%
import pandas as pd

summaries = summary["datasets"]
keys = ("instances", "NoC@85", "NoC@90", "NoF@85", "NoF@90", "SPC", "SPC_method")
pd.DataFrame({name: {k: s[k] for k in keys} for name, s in summaries.items()}).T

# %%
fig, ax = plt.subplots(figsize=(4, 3))
for name, s in summaries.items():
    ax.plot(range(1, len(s["mIoU@k"]) + 1), s["mIoU@k"], marker="o", label=name)
ax.set(xlabel="clicks", ylabel="mIoU", title="mIoU vs clicks", ylim=(0, 1))
ax.legend()
plt.show()
