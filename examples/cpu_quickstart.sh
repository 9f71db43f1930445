#!/usr/bin/env bash
# CPU quickstart on the built-in demo corpus: build it (Debian and PyPI packages, cached),
# index it per domain, then run the main job. Scale with OUT, MB_PER_DOMAIN, ITERS, SEQ, BATCH.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-data/demo}
MB_PER_DOMAIN=${MB_PER_DOMAIN:-4}
ITERS=${ITERS:-200}
SEQ=${SEQ:-256}
BATCH=${BATCH:-32}

python tools/build_demo_corpus.py --output-dir "$OUT" --max-mb-per-domain "$MB_PER_DOMAIN"
python tools/preprocess_domains.py --input "$OUT/jsonl" --output-dir "$OUT/indexed" \
    --tokenizer-type SentencePieceTokenizer --tokenizer-model "$OUT/tokenizer.model" \
    --workers "$(nproc)" --append-eod
python pretrain_acodm.py --data-path "$OUT/indexed/domains.json" \
    --tokenizer-type SentencePieceTokenizer --tokenizer-model "$OUT/tokenizer.model" \
    --data-cache-path "$OUT/cache" --seq-length "$SEQ" --global-batch-size "$BATCH" \
    --train-iters "$ITERS" --log-interval 20
echo "corpus: $OUT/jsonl  indexed: $OUT/indexed/domains.json  tokenizer: $OUT/tokenizer.model"
