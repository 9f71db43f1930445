"""Train the demo corpus's SentencePiece BPE tokenizer, deterministically.

Training reads sentences from an iterator and writes the model to memory, so the model does not
record temporary file names; one thread and no input shuffling make the same sample give the
same model bytes.
"""

from __future__ import annotations

import io
from pathlib import Path

import sentencepiece

from megatron_acodm.demo_corpus.documents import utf8_size
from megatron_acodm.demo_corpus.output import write_bytes

# Megatron needs an end-of-document id and a padding id different from it.
SPECIAL_IDS = {"unk_id": 0, "bos_id": 1, "eos_id": 2, "pad_id": 3}
MAX_SENTENCE_BYTES = 8192  # longer lines are skipped by the trainer


def tokenizer_sample(documents_by_domain: dict[str, list[str]], bytes_per_domain: int) -> list[str]:
    """The leading documents of each domain (already in a fixed shuffled order) up to a byte budget."""
    sample = []
    for documents in documents_by_domain.values():
        budget = bytes_per_domain
        for document in documents:
            if budget <= 0:
                break
            sample.append(document)
            budget -= utf8_size(document)
    return sample


def train(sample: list[str], vocab_size: int) -> bytes:
    """A serialized BPE model with byte fallback trained on the non-empty lines of `sample`."""
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=(line for document in sample for line in document.split("\n") if line.strip()),
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab_size,
        byte_fallback=True,
        character_coverage=0.9995,
        split_digits=True,
        # Keep text as written: code indentation and runs of spaces survive a round trip.
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        max_sentence_length=MAX_SENTENCE_BYTES,
        input_sentence_size=0,
        shuffle_input_sentence=False,
        num_threads=1,
        minloglevel=2,
        **SPECIAL_IDS,
    )
    return model.getvalue()


def vocab_listing(model: bytes) -> bytes:
    """The `.vocab` companion file SentencePiece's command line writes: `piece<TAB>score` per line."""
    processor = sentencepiece.SentencePieceProcessor(model_proto=model)
    lines = (f"{processor.id_to_piece(i)}\t{processor.get_score(i):g}\n" for i in range(processor.get_piece_size()))
    return "".join(lines).encode("utf-8")


def write_model(model: bytes, model_path: Path) -> str:
    """Write `<name>.model` and `<name>.vocab` atomically; return the model's sha256."""
    write_bytes(model_path.with_suffix(".vocab"), vocab_listing(model))
    return write_bytes(model_path, model)
