#!/usr/bin/env bash
# The CPU benchmark suite (issue 7): framework (DreamBoothModule + lightning.Trainer) vs a bare PyTorch loop, same
# model, same process. About 7 minutes on 2 idle CPU cores (more when rounds are re-run); run it on an otherwise idle machine (each line reports cpu_util
# and warns when other processes took the cores).
#   bash bench/run_cpu_suite.sh [results.jsonl]        # default: bench/results/cpu_suite.jsonl (appended)
#   python bench/report.py bench/results/cpu_suite.jsonl   # the Markdown table for docs/benchmarks.md
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${1:-bench/results/cpu_suite.jsonl}
mkdir -p "$(dirname "$OUT")"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
start=$(date +%s)
run() {
  local t0=$(date +%s)
  echo "+ python bench/train_step.py $*"
  "$PY" bench/train_step.py --device cpu --out "$OUT" "$@" | grep --line-buffered -v '^{'
  echo "  ($(( $(date +%s) - t0 )) s)"
}

# tiny SD1-shaped model, the quickstart's shape (batch 2, LoRA attn rank 4 on U-Net + text encoder)
run --model tiny --resolution 64  --batch 2 --adapter lora_attn --warmup 3 --steps 20 --rounds 4 --label cpu-suite --retry-busy 2
run --model tiny --resolution 128 --batch 2 --adapter lora_attn --warmup 3 --steps 15 --rounds 4 --label cpu-suite --retry-busy 2
run --model tiny --resolution 64  --batch 2 --adapter lora_attn --warmup 3 --steps 20 --rounds 4 --cache-latents --label cpu-suite --retry-busy 2
# SD 1.5 architecture (random weights), LoRA attn rank 4, 256 px, batch 1: seconds per step on 2 cores
run --model sd15 --resolution 256 --batch 1 --adapter lora_attn --warmup 1 --steps 3 --rounds 2 --label cpu-suite --retry-busy 1
echo "suite wall time: $(( $(date +%s) - start )) s; load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
