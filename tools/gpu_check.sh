#!/usr/bin/env bash
# First run on a GPU machine (README "GPU check"): the GPU, then about one minute of ViT-B@448
# training, seconds per click and a GrabCut evaluation. Extra arguments go to tools/gpu_check.py.
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || echo "nvidia-smi not found"
exec python tools/gpu_check.py "$@"
