#!/usr/bin/env bash
# AC-ODM proxy mode: a Pythia-160M-like proxy learns the mixing policy online, then a Pythia-1B-like
# target (TP=2) is trained with what the proxy learned. TRANSFER chooses how:
#   policy (default)  the proxy's frozen actor drives the target, reading the target's own features;
#   replay            the mixture the proxy followed, in 10 phases, replayed as a schedule;
#   mean              the proxy's mean mixture as a static blend (DoReMi-style transfer).
set -euo pipefail
cd "$(dirname "$0")/.."
MIXER=acodm
source examples/gpu_common.sh
TRANSFER=${TRANSFER:-policy}
POLICY=${POLICY:-runs/proxy_160m/acodm_policy.pt}

PROXY=runs/proxy_160m
torchrun --nproc-per-node "$GPUS" pretrain_acodm.py "${COMMON_ARGS[@]}" \
    --save "$PROXY" --load "$PROXY" --tensorboard-dir "$PROXY/tensorboard" \
    --num-layers 12 --hidden-size 768 --num-attention-heads 12 \
    --micro-batch-size 8 --global-batch-size 1024 --lr 6e-4 --min-lr 6e-5 \
    --use-distributed-optimizer --acodm-export-policy "$POLICY"

case $TRANSFER in
    policy) TARGET_MIXING=(--acodm-policy "$POLICY") ;;
    replay)
        python tools/export_schedule.py "$PROXY/metrics.jsonl" -o "$PROXY/schedule.json" --phases 10
        TARGET_MIXING=(--mixer schedule --mixing-schedule "$PROXY/schedule.json") ;;
    mean)
        python tools/export_schedule.py "$PROXY/metrics.jsonl" -o "$PROXY/blend.json" --phases 1
        TARGET_MIXING=(--mixer static --data-path "$PROXY/blend.json") ;;
    *) echo "error: TRANSFER=$TRANSFER: give policy, replay or mean" >&2; exit 2 ;;
esac
RUN=runs/target_1b_$TRANSFER
torchrun --nproc-per-node "$GPUS" pretrain_acodm.py "${COMMON_ARGS[@]}" \
    --save "$RUN" --load "$RUN" --tensorboard-dir "$RUN/tensorboard" \
    --num-layers 16 --hidden-size 2048 --num-attention-heads 8 --tensor-model-parallel-size 2 \
    --micro-batch-size 4 --global-batch-size 1024 --lr 3e-4 --min-lr 3e-5 \
    --use-distributed-optimizer "${TARGET_MIXING[@]}"
