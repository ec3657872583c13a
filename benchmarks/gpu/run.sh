#!/usr/bin/env bash
# The one command of the GPU session (benchmarks/gpu/README.md): the whole evaluation, its log into $OUT.
set -o pipefail
OUT="${OUT:-runs/gpu}"
mkdir -p "$OUT"
export PYTHONPATH=src PYTHONUNBUFFERED=1 MPOXSCAN_WEIGHTS_DIR=.gpu/weights
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee "$OUT/log.txt"
python3 benchmarks/gpu/evaluate.py --out "$OUT" "$@" 2>&1 | tee -a "$OUT/log.txt"
