"""Part 4, corpus: 8 domains of random words, a SentencePiece BPE tokenizer trained on them (the demo
corpus's trainer, 4096 entries: a speed check needs no real vocabulary) and the project's own
indexing (`megatron_acodm.indexing`); the GPU machine has neither a corpus nor a network."""

from __future__ import annotations

import os
from dataclasses import dataclass

from .profiles import NUM_DOMAINS, SEED, Profile


def random_documents(profile: Profile, rng) -> dict[str, list[str]]:
    """NUM_DOMAINS domains of documents of Zipf-drawn random words; domain k has (k + 1) shares."""
    import itertools

    letters = "abcdefghijklmnopqrstuvwxyz"
    lexicon = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 9))) for _ in range(profile.lexicon_size)]
    zipf = list(itertools.accumulate(1.0 / (rank + 1) for rank in range(len(lexicon))))
    low, high = profile.words_per_document
    return {
        f"domain{k}": [" ".join(rng.choices(lexicon, cum_weights=zipf, k=rng.randint(low, high)))
                       for _ in range((k + 1) * profile.documents_per_domain)]
        for k in range(NUM_DOMAINS)
    }


@dataclass(frozen=True)
class Corpus:
    """Where the synthetic corpus lives in the scratch folder (kept out of the report)."""

    folder: str

    @property
    def tokenizer_model(self) -> str:
        return os.path.join(self.folder, "tokenizer.model")

    @property
    def domains_json(self) -> str:
        return os.path.join(self.folder, "indexed", "domains.json")

    @property
    def cache(self) -> str:
        return os.path.join(self.folder, "cache")


def build_corpus(profile: Profile, corpus: Corpus) -> dict:
    import random
    from pathlib import Path

    from megatron_acodm.demo_corpus import tokenizer_training
    from megatron_acodm.demo_corpus.output import jsonl_bytes, write_bytes
    from megatron_acodm.indexing import PreprocessOptions, discover_inputs, preprocess_all

    documents = random_documents(profile, random.Random(SEED))
    every_document = [text for texts in documents.values() for text in texts]
    tokenizer_training.write_model(tokenizer_training.train(every_document, profile.vocab_size), Path(corpus.tokenizer_model))
    for domain, texts in documents.items():
        write_bytes(Path(corpus.folder, "jsonl", f"{domain}.jsonl"), jsonl_bytes(texts))
    options = PreprocessOptions(output_dir=os.path.dirname(corpus.domains_json), tokenizer_type="SentencePieceTokenizer",
                                tokenizer_model=corpus.tokenizer_model, append_eod=True)
    manifest = preprocess_all(discover_inputs(input_dir=os.path.join(corpus.folder, "jsonl")), options, log=lambda message: None)
    return {
        "domains": len(manifest.domains), "documents": len(every_document), "vocab_size": profile.vocab_size,
        "tokens": sum(domain.tokens for domain in manifest.domains), "ok": True,
    }
