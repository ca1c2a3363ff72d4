#!/usr/bin/env bash
# The GPU benchmark suite (issue 7), for one CUDA GPU: SD 1.5 architecture (random weights, no download) at 512²,
# bf16-mixed, LoRA rank 16 (attention) and full DreamBooth, batch 1 and the largest batch that fits (doubling until
# out of memory; each size in a fresh process). Prints img/s, peak GB, GFLOP/image and MFU against --peak-tflops
# (default 989: H100/H200 dense bf16); PARTS=sdxl: the SDXL base architecture at 1024² (bench/sdxl_step.py).
# Not yet run (no GPU so far), so its duration is unknown;
# or run it in parts: PARTS=lora, PARTS=full, PARTS=extras; PARTS=peer (not default): the side by side of issue #21.
#   bash bench/run_gpu_suite.sh [results.jsonl]          # default: bench/results/gpu_suite.jsonl (appended)
#   python bench/report.py bench/results/gpu_suite.jsonl
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${1:-bench/results/gpu_suite.jsonl}
MODEL=${MODEL:-sd15}; RES=${RES:-512}; MAXB=${MAXB:-64}; STEPS=${STEPS:-20}; WARMUP=${WARMUP:-5}
PARTS=${PARTS:-"lora full extras sdxl"}   # run a subset, e.g. PARTS=lora, when one command may only take ~10 min
mkdir -p "$(dirname "$OUT")"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
run() { echo "+ python bench/train_step.py $*"; "$PY" bench/train_step.py --out "$OUT" "$@" | grep -v '^{'; }

for part in lora full; do
  [[ " $PARTS " == *" $part "* ]] || continue
  if [ "$part" = lora ]; then adapter="lora_attn --rank 16"; else adapter="full"; fi
  common="--model $MODEL --resolution $RES --precision bf16-mixed --adapter $adapter --warmup $WARMUP --steps $STEPS --label gpu-suite"
  b=1
  while [ "$b" -le "$MAXB" ]; do
    run $common --batch $b; rc=$?   # pipefail: python's exit status (3: CUDA out of memory)
    [ "$rc" -eq 0 ] || { echo "batch $b: exit $rc (3 = out of memory): the largest batch is $((b / 2))"; break; }
    b=$((b * 2))
  done
done
if [[ " $PARTS " == *" sdxl "* ]]; then
  # SDXL base architecture (random weights, bf16 frozen weights) at 1024², batch 1: LoRA on the U-Net (lora_attn
  # rank 16), then with gradient checkpointing, then with 8-bit AdamW too (bench/sdxl_step.py: the framework's step)
  # its JSON lines (framework step only, no bare loop) go beside OUT: <OUT without .jsonl>_sdxl.jsonl
  sdxl() { echo "+ python bench/sdxl_step.py $*"; "$PY" bench/sdxl_step.py --out "${OUT%.jsonl}_sdxl.jsonl" "$@" | grep -v '^{'; }
  common="--model sdxl --resolution 1024 --batch 1 --precision bf16-mixed --weight-dtype bf16 --adapter lora_attn --rank 16 --warmup 3 --steps 10 --label gpu-suite"
  sdxl $common
  sdxl $common --grad-checkpointing
  sdxl $common --grad-checkpointing --optim adamw8bit
fi
if [[ " $PARTS " == *" peer "* ]]; then
  # side by side with diffusers' train_dreambooth_lora.py (issue #21; needs torchvision beside torch for the peer and
  # ../shared/peer/): each tool's defaults, then both in bf16 mixed precision (the peer's --mixed_precision; sdft's
  # trainer=gpu). Not in the default PARTS: run it as PARTS=peer.
  echo "+ python bench/peer.py (SD 1.5 shape, ${RES}²)"
  "$PY" bench/peer.py --model sd15 --resolution "$RES" --steps 10 --rounds 2 --out "${OUT%.jsonl}_peer.jsonl"
  "$PY" bench/peer.py --model sd15 --resolution "$RES" --steps 10 --rounds 2 --out "${OUT%.jsonl}_peer.jsonl" \
    --peer-arg=--mixed_precision=bf16 --sdft-arg trainer=gpu
fi
[[ " $PARTS " == *" extras "* ]] || exit 0
# what the cheap speed-ups buy at batch 1 (LoRA)
run --model $MODEL --resolution $RES --precision bf16-mixed --adapter lora_attn --rank 16 --batch 1 --warmup 8 --steps $STEPS --compile --label gpu-suite
run --model $MODEL --resolution $RES --precision bf16-mixed --adapter lora_attn --rank 16 --batch 1 --warmup $WARMUP --steps $STEPS --cache-latents --label gpu-suite
run --model $MODEL --resolution $RES --precision bf16-mixed --adapter full --batch 1 --warmup $WARMUP --steps $STEPS --optim adamw8bit --grad-checkpointing --label gpu-suite
