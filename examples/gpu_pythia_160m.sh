#!/usr/bin/env bash
# Pythia-160M-like target on one node (data parallel over GPUS, default 8).
set -euo pipefail
cd "$(dirname "$0")/.."
source examples/gpu_common.sh
torchrun --nproc-per-node "$GPUS" pretrain_acodm.py "${COMMON_ARGS[@]}" \
    --save "$RUN" --load "$RUN" --tensorboard-dir "$RUN/tensorboard" \
    --num-layers 12 --hidden-size 768 --num-attention-heads 12 \
    --micro-batch-size 8 --global-batch-size 1024 --lr 6e-4 --min-lr 6e-5 \
    --use-distributed-optimizer "$@"
