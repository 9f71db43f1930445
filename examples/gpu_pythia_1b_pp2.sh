#!/usr/bin/env bash
# Pythia-1B-like target with pipeline parallelism 2 (8 layers per stage, 1F1B schedule).
set -euo pipefail
cd "$(dirname "$0")/.."
source examples/gpu_common.sh
torchrun --nproc-per-node "$GPUS" pretrain_acodm.py "${COMMON_ARGS[@]}" \
    --save "$RUN" --load "$RUN" --tensorboard-dir "$RUN/tensorboard" \
    --num-layers 16 --hidden-size 2048 --num-attention-heads 8 \
    --pipeline-model-parallel-size 2 \
    --micro-batch-size 4 --global-batch-size 1024 --lr 3e-4 --min-lr 3e-5 \
    --use-distributed-optimizer "$@"
