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
# # Train: one model of the profile
#
# Trains with the library's `Trainer` (what `icmformer train` runs), from the config file and
# this model's settings (the ablation switches are parameters, so
# `papermill notebooks/train.ipynb out.ipynb -p cross_variant X,Y,YX` trains a variant directly). `max_steps = -1` trains nothing and saves the seeded initial weights (the
# "untrained" reference row).

# %% tags=["parameters"]
run_name = "vit"
config = "configs/demo.yaml"
model = "icmformer_vit_tiny_224"
cross_modality = True
cross_variant = "X,Y,XY"
max_steps = 400  # 0: the full schedule of the config, -1: no training (initial weights)
seed = 0
train_root = "data/COCO_MVal"
out_dir = "results/runs/vit"
device = "cpu"
extra = ""  # further config overrides such as batch_size:2 (written with an equals sign), joined by semicolons

# %%
import json
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch

from icmformer.pipeline.params import as_bool
from icmformer.training.config import load_config

out = Path(out_dir)
overrides = [
    f"model.name={model}",
    f"model.overrides.cross_modality={str(as_bool(cross_modality)).lower()}",
    f"model.overrides.cross_variant='{cross_variant}'",
    f"seed={int(seed)}",
    f"data.data_root={train_root}",
    f"device={device}",
]
if int(max_steps) > 0:
    overrides.append(f"max_steps={int(max_steps)}")
overrides += [e.strip() for e in str(extra).split(";") if e.strip()]
overrides

# %%
if int(max_steps) < 0:
    # No training: the seeded initial weights of the same model, for the "untrained" row.
    from icmformer import create_model, save_checkpoint
    from icmformer.training.config import save_config

    cfg = load_config(config, overrides)
    torch.manual_seed(cfg.seed)
    net = create_model(cfg.model.name, **dict(cfg.model.overrides))
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    save_checkpoint(net, out / "model.safetensors", metadata={"steps": 0, "note": "untrained (initial weights)"})
    (out / "train_summary.json").write_text(json.dumps({"steps": 0, "note": "untrained: initial weights"}, indent=2) + "\n")
else:
    from icmformer.training.trainer import Trainer  # what `icmformer train` runs

    cfg = load_config(config, overrides)
    cfg.output_dir = str(out)
    Trainer(cfg, progress=False, quiet=True).fit()
json.loads((out / "train_summary.json").read_text())

# %%
loss_files = sorted(out.glob("dvclive/plots/metrics/**/loss.tsv"))
if loss_files:
    df = pd.read_csv(loss_files[0], sep="\t")
    ax = df.plot(x="step", y="loss", figsize=(5, 3), legend=False, title=f"{run_name}: training loss (NFL)")
    ax.set_xlabel("step")
    plt.show()
