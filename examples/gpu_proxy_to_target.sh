#!/usr/bin/env bash
# AC-ODM proxy mode: a Pythia-160M-like proxy learns the mixing policy online, then its frozen
# actor drives a Pythia-1B-like target (TP=2), reading the target's own state features.
set -euo pipefail
cd "$(dirname "$0")/.."
MIXER=acodm
source examples/gpu_common.sh
POLICY=${POLICY:-runs/proxy_160m/acodm_policy.pt}

RUN=runs/proxy_160m
torchrun --nproc-per-node "$GPUS" pretrain_acodm.py "${COMMON_ARGS[@]}" \
    --save "$RUN" --load "$RUN" --tensorboard-dir "$RUN/tensorboard" \
    --num-layers 12 --hidden-size 768 --num-attention-heads 12 \
    --micro-batch-size 8 --global-batch-size 1024 --lr 6e-4 --min-lr 6e-5 \
    --use-distributed-optimizer --acodm-export-policy "$POLICY"

RUN=runs/target_1b
torchrun --nproc-per-node "$GPUS" pretrain_acodm.py "${COMMON_ARGS[@]}" \
    --save "$RUN" --load "$RUN" --tensorboard-dir "$RUN/tensorboard" \
    --num-layers 16 --hidden-size 2048 --num-attention-heads 8 --tensor-model-parallel-size 2 \
    --micro-batch-size 4 --global-batch-size 1024 --lr 3e-4 --min-lr 3e-5 \
    --use-distributed-optimizer --acodm-policy "$POLICY"
