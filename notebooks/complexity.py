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
# # Complexity: parameters, FLOPs (ours and the paper's thop convention) and seconds per click
#
# Params/FLOPs need no training (counted on the meta device). Seconds per click come from
# `icmformer bench`: the naive path (full forward per click, as the official code) against our
# optimised path and the int8 fast mode, side by side, on this machine's CPU (and GPU if present).

# %% tags=["parameters"]
models = "icmformer_vit_base_448@448,icmformer_swin_base_384@384,icmformer_swin_small_224@224,icmformer_swin_small_224@384"
bench_models = "icmformer_vit_base_448"
bench_clicks = 5
bench_repeats = 2
bench_modes = "naive,optimised,fast"
data_root = "data"
out = "results/complexity/complexity.json"
bench_out = "results/complexity/bench.json"

# %%
import json
from pathlib import Path

import pandas as pd
import torch

from icmformer.benchmark import format_table, run_benchmark
from icmformer.models.complexity import complexity

rows = []
for spec in [m.strip() for m in models.split(",") if m.strip()]:
    name, _, size = spec.partition("@")
    c = complexity(name, (int(size), int(size)) if size else None)
    rows.append(c.to_dict())
Path(out).parent.mkdir(parents=True, exist_ok=True)
Path(out).write_text(json.dumps(rows, indent=2) + "\n")
pd.DataFrame(rows)

# %%
devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
bench = []
for name in [m.strip() for m in bench_models.split(",") if m.strip()]:
    for device in devices:
        modes = [m for m in bench_modes.split(",") if not (device == "cuda" and m == "fast")]
        res = run_benchmark(name, device=device, modes=modes, clicks=int(bench_clicks), repeats=int(bench_repeats),
                            data_root=data_root, progress=False)
        print(format_table(res), end="\n\n")
        bench.append(res.to_dict())
Path(bench_out).write_text(json.dumps(bench, indent=2) + "\n")
