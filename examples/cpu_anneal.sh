#!/usr/bin/env bash
# A final anneal without a restart, on the demo corpus: uniform for 80% of the run, then linearly to
# a blend of two chosen domains (ANNEAL, default code and math, 1:1) by the last step. Builds and
# indexes the corpus as examples/cpu_quickstart.sh does, writes the schedule, trains, plots the
# mixture (runs/anneal/mixture.png shows the anneal). Scale with OUT, ITERS, ANNEAL, NPROC.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-data/demo}
RUN=${RUN:-runs/anneal}
ITERS=${ITERS:-500}
ANNEAL=${ANNEAL:-code,math}
NPROC=${NPROC:-1}
WARMUP=$(( ITERS / 10 < 50 ? ITERS / 10 : 50 ))
LOG_INTERVAL=$(( ITERS / 50 > 0 ? ITERS / 50 : 1 ))

python tools/build_demo_corpus.py --output-dir "$OUT"
python tools/preprocess_domains.py --input "$OUT/jsonl" --output-dir "$OUT/indexed" \
    --tokenizer-type SentencePieceTokenizer --tokenizer-model "$OUT/tokenizer.model" \
    --workers "$(nproc)" --append-eod
mkdir -p "$RUN"
# The schedule over the corpus's domains: uniform at the start and at 80%, then ANNEAL's domains alone.
python - "$OUT/indexed/domains.json" "$ANNEAL" "$RUN/schedule.json" <<'PYTHON'
import json, sys
manifest, anneal, output = sys.argv[1], sys.argv[2].split(","), sys.argv[3]
names = [domain["name"] for domain in json.load(open(manifest))["domains"]]
unknown = [name for name in anneal if name not in names]
if unknown:
    sys.exit(f"error: ANNEAL={sys.argv[2]}: {unknown} not among the corpus's domains {names}")
uniform = {name: 1 for name in names}
annealed = {name: (1 if name in anneal else 0) for name in names}
points = [{"fraction": 0.0, "weights": uniform}, {"fraction": 0.8, "weights": uniform}, {"fraction": 1.0, "weights": annealed}]
json.dump({"interpolation": "linear", "points": points}, open(output, "w"), indent=2)
PYTHON
torchrun --nproc-per-node "$NPROC" pretrain_acodm.py \
    --data-path "$OUT/indexed/domains.json" --split 969,30,1 --data-cache-path "$OUT/cache" \
    --tokenizer-type SentencePieceTokenizer --tokenizer-model "$OUT/tokenizer.model" \
    --num-layers 4 --hidden-size 128 --num-attention-heads 4 --seq-length 128 \
    --hidden-dropout 0 --attention-dropout 0 \
    --micro-batch-size 8 --global-batch-size 16 --train-iters "$ITERS" \
    --lr 1e-3 --min-lr 1e-4 --lr-warmup-iters "$WARMUP" --lr-decay-style cosine --weight-decay 0.1 --clip-grad 1.0 \
    --mixer schedule --mixing-schedule "$RUN/schedule.json" \
    --log-interval "$LOG_INTERVAL" --eval-interval "$(( LOG_INTERVAL * 5 ))" --eval-iters 4 \
    --save "$RUN" --save-interval "$ITERS"
python tools/plot_mixture.py "$RUN/metrics.jsonl" -o "$RUN/mixture.png"
echo "metrics: $RUN/metrics.jsonl  plot: $RUN/mixture.png  schedule: $RUN/schedule.json"
