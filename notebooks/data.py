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
generate_weights = False  # write random stand-ins, in the upstream layouts, of missing weight files (paper-smoke)

# %%
import json
from pathlib import Path

import pandas as pd

from icmformer.pipeline.data import prepare_data
from icmformer.pipeline.params import as_bool, as_list

generated = []
if as_bool(generate_weights):
    from icmformer.pipeline.weights import write_upstream_weights

    generated = [p.name for p in write_upstream_weights(Path(data_root) / "weights", as_list(weights))]
    print(f"stand-in weight files (random values, upstream layouts) written: {generated or 'none (all present)'}")
manifest = prepare_data(as_list(datasets), root=data_root, mirrors=as_list(mirrors), weights=as_list(weights),
                        download=as_bool(download))
if as_bool(generate_weights):
    manifest["weights_generated"] = True  # the weights are random stand-ins: no number of this run means anything
Path(out).parent.mkdir(parents=True, exist_ok=True)
Path(out).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
pd.DataFrame(
    [{"dataset": k, "images": v.get("images"), "instances": v.get("instances"), "source": v["source"],
      "check": v.get("fingerprint", {}).get("method"), "files": v.get("fingerprint", {}).get("files")}
     for k, v in manifest["datasets"].items()]
)
