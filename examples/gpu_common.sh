# Sourced by the GPU recipes: data, tokenizer and the optimisation settings they share.
# DATA is a domains.json from tools/preprocess_domains.py; TOKENIZER the model it was made with.
DATA=${DATA:-data/demo/indexed/domains.json}
TOKENIZER=${TOKENIZER:-data/demo/tokenizer.model}
GPUS=${GPUS:-8}
MIXER=${MIXER:-odm}
RUN=${RUN:-runs/$(basename "$0" .sh)}  # checkpoints, metrics and TensorBoard of the run
COMMON_ARGS=(
    --data-path "$DATA" --split 969,30,1 --data-cache-path "${DATA%/*}/cache"
    --tokenizer-type SentencePieceTokenizer --tokenizer-model "$TOKENIZER"
    --seq-length 2048 --max-position-embeddings 2048 --position-embedding-type rope --rotary-percent 0.25
    --normalization LayerNorm --untie-embeddings-and-output-weights
    --hidden-dropout 0 --attention-dropout 0 --bf16
    --lr-decay-style cosine --lr-warmup-iters 1430 --weight-decay 0.01 --clip-grad 1.0
    --adam-beta1 0.9 --adam-beta2 0.95 --adam-eps 1e-8
    --train-iters "${ITERS:-143000}" --mixer "$MIXER"
    --log-interval 10 --eval-interval 1000 --eval-iters 10
    --save-interval 1000
)
