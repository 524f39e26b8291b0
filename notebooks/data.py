# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Data: the datasets (and weights) this profile needs
#
# Checks that every dataset is under the data root, links missing ones from a local mirror
# (CI: `../shared/data`), downloads public archives when `download` is on, and otherwise stops
# with a list of what is missing and where to get it. Every set is then counted and fingerprinted;
# the manifest is the dependency of all later stages.

# %% tags=["parameters"]
data_root = "data"
mirrors = "../shared/data"  # comma-separated local folders holding dataset copies
datasets = "GrabCut,Berkeley,DAVIS,COCO_MVal"  # comma-separated
weights = ""  # comma-separated files expected under <data_root>/weights
download = False
out = "results/data/manifest.json"

# %%
import json
from pathlib import Path

import pandas as pd

from icmformer.pipeline.data import prepare_data


def as_list(text):
    return [t.strip() for t in str(text).split(",") if t.strip()]


def as_bool(value):
    return str(value).strip().lower() in {"1", "true", "yes", "on"}


manifest = prepare_data(as_list(datasets), root=data_root, mirrors=as_list(mirrors), weights=as_list(weights),
                        download=as_bool(download))
Path(out).parent.mkdir(parents=True, exist_ok=True)
Path(out).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
pd.DataFrame(
    [{"dataset": k, "images": v.get("images"), "instances": v.get("instances"), "source": v["source"],
      "check": v.get("fingerprint", {}).get("method"), "files": v.get("fingerprint", {}).get("files")}
     for k, v in manifest["datasets"].items()]
)
