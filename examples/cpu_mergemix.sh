#!/usr/bin/env bash
# MergeMix on the demo corpus, on CPU: a short uniform base run, one expert per domain trained from
# it, the merged-model search (tools/mergemix.py), then a run on the blend it found. Builds and
# indexes the demo corpus first when it is missing (as cpu_quickstart.sh does). About 13 minutes on
# 2 cores. Scale with OUT, RUN, BASE_ITERS, EXPERT_ITERS, ITERS, LAYERS, HIDDEN, SEQ, BATCH, NPROC.
# Needs the mergemix extra: pip install -e ".[demo,mergemix]".
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import sklearn" 2>/dev/null || { echo 'error: tools/mergemix.py needs scikit-learn: pip install -e ".[mergemix]"' >&2; exit 2; }
OUT=${OUT:-data/demo}
RUN=${RUN:-runs/mergemix}
BASE_ITERS=${BASE_ITERS:-150}
EXPERT_ITERS=${EXPERT_ITERS:-50}
ITERS=${ITERS:-450}
LAYERS=${LAYERS:-4}
HIDDEN=${HIDDEN:-128}
SEQ=${SEQ:-128}
BATCH=${BATCH:-16}
NPROC=${NPROC:-1}

if [ ! -f "$OUT/indexed/domains.json" ]; then
    python tools/build_demo_corpus.py --output-dir "$OUT"
    python tools/preprocess_domains.py --input "$OUT/jsonl" --output-dir "$OUT/indexed" \
        --tokenizer-type SentencePieceTokenizer --tokenizer-model "$OUT/tokenizer.model" \
        --workers "$(nproc)" --append-eod
fi
train() {
    local iters=$1; shift
    torchrun --nproc-per-node "$NPROC" pretrain_acodm.py \
        --split 969,30,1 --data-cache-path "$OUT/cache" \
        --tokenizer-type SentencePieceTokenizer --tokenizer-model "$OUT/tokenizer.model" \
        --num-layers "$LAYERS" --hidden-size "$HIDDEN" --num-attention-heads 4 --seq-length "$SEQ" \
        --hidden-dropout 0 --attention-dropout 0 --micro-batch-size 8 --global-batch-size "$BATCH" \
        --train-iters "$iters" --lr 1e-3 --min-lr 1e-4 --lr-warmup-iters $(( iters / 10 )) --lr-decay-style cosine \
        --weight-decay 0.1 --clip-grad 1.0 --log-interval $(( iters >= 10 ? iters / 10 : 1 )) \
        --eval-interval $(( iters >= 5 ? iters / 5 : 1 )) --eval-iters 8 "$@"
}

train "$BASE_ITERS" --data-path "$OUT/indexed/domains.json" --mixer uniform --save "$RUN/base"
python tools/mergemix.py --base "$RUN/base" --data-path "$OUT/indexed/domains.json" --output "$RUN/blend.json" \
    --expert-iters "$EXPERT_ITERS" --nproc-per-node "$NPROC"
train "$ITERS" --data-path "$RUN/blend.json" --mixer static --save "$RUN/on-blend"
echo "blend: $RUN/blend.json  run on it: $RUN/on-blend/metrics.jsonl  search: $RUN/blend.mergemix/"
