#!/usr/bin/env bash
# Issue "speed" on the lent GPU: absolute MTT it/s (fp32, TF32, bf16; 1 and 4 trajectories), peak memory,
# training images/s and bf16 gradient agreement, in one call of a few minutes.
# Stage kornia first (call A of ../shared/gpu/README.md), then run this as call B:
#     bash benchmarks/speed_gpu.sh
# It writes benchmarks/results/speed.json [cuda] and copies it under $OUT.
set -euo pipefail
export PYTHONPATH=/opt/site:$PWD PYTHONUNBUFFERED=1
python3 benchmarks/speed.py --device cuda --steps 10 20 --rounds 3 --train-images 25600 2>&1 | tee "${OUT:-/tmp}/speed_gpu.log"
mkdir -p "${OUT:-/tmp}" && cp benchmarks/results/speed.json "${OUT:-/tmp}/"
