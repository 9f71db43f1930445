#!/usr/bin/env bash
# Pythia-1B-like target with tensor parallelism 2 (LAYOUT=tp2, the default) or pipeline
# parallelism 2 (LAYOUT=pp2: 8 layers per stage, 1F1B schedule); GPUS/2 data-parallel replicas.
set -euo pipefail
cd "$(dirname "$0")/.."
source examples/gpu_common.sh
case "${LAYOUT:-tp2}" in
    tp2) PARALLEL=(--tensor-model-parallel-size 2) ;;
    pp2) PARALLEL=(--pipeline-model-parallel-size 2) ;;
    *) echo "LAYOUT must be tp2 or pp2" >&2; exit 2 ;;
esac
torchrun --nproc-per-node "$GPUS" pretrain_acodm.py "${COMMON_ARGS[@]}" "${PARALLEL[@]}" \
    --save "$RUN" --load "$RUN" --tensorboard-dir "$RUN/tensorboard" \
    --num-layers 16 --hidden-size 2048 --num-attention-heads 8 \
    --micro-batch-size 4 --global-batch-size 1024 --lr 3e-4 --min-lr 3e-5 \
    --use-distributed-optimizer "$@"
