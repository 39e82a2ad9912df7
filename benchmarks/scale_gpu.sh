#!/usr/bin/env bash
# Issue "large total IPC" on the lent GPU: absolute MTT-step and training costs at the published width.
# Stage Ray and kornia first (call A of ../shared/gpu/README.md), then run this as call B (< 10 min):
#     bash benchmarks/scale_gpu.sh
# It writes benchmarks/results/scale.json [components_cuda] and copies it under $OUT.
set -euo pipefail
export PYTHONPATH=/opt/site:$PWD
python3 benchmarks/scale.py components --device cuda --width 128 --unions 4000 12000 36000 \
    --val-stages 2 3 --mem-before 2 4 --mem-after 2 4 8 16 50
mkdir -p "${OUT:-/tmp}" && cp benchmarks/results/scale.json "${OUT:-/tmp}/"
