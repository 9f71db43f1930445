#!/usr/bin/env bash
# Pythia-1B-like target with tensor parallelism 2 (GPUS/2 data-parallel replicas).
set -euo pipefail
cd "$(dirname "$0")/.."
source examples/gpu_common.sh
torchrun --nproc-per-node "$GPUS" pretrain_acodm.py "${COMMON_ARGS[@]}" \
    --save "$RUN" --load "$RUN" --tensorboard-dir "$RUN/tensorboard" \
    --num-layers 16 --hidden-size 2048 --num-attention-heads 8 \
    --tensor-model-parallel-size 2 \
    --micro-batch-size 4 --global-batch-size 1024 --lr 3e-4 --min-lr 3e-5 \
    --use-distributed-optimizer "$@"
