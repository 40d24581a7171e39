#!/usr/bin/env bash
# Every GPU check of the LDEQ paper configuration in one run (device machine: python3 holds CUDA torch).
#   OUT=/some/dir bash benchmarks/gpu_run.sh
set -euo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
out=${OUT:?set OUT to the results folder}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/nvidia_smi.csv"
python3 benchmarks/gpu_paper_check.py --device cuda --steps "${STEPS:-400}" --out "$out" 2>&1 | tee "$out/gpu_paper_check.log"
python3 benchmarks/train_memory.py --device cuda --profile paper --batch 16 --iters 2 5 10 20 \
    --out "$out/train_memory_paper_cuda.json"
for profile in paper_wflw_v paper; do
    python3 benchmarks/rwr_speed.py --device cuda --profile "$profile" --frames 30 \
        --out "$out/rwr_speed_${profile}_cuda.json"
done
