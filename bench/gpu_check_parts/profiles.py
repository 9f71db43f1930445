"""The sizes of the check's two modes, the GPU check and its CPU rehearsal, and the settings every part shares."""

from __future__ import annotations

from dataclasses import dataclass, field

BUDGET_S = 480  # one H100 call, machine start excluded
SEED = 1234
THREADS = 1  # the trainer's OpenMP threads, as torchrun gives each of 8 ranks on a node
NUM_DOMAINS = 8


@dataclass(frozen=True)
class Model:
    num_layers: int
    hidden_size: int
    heads: int
    micro_batch: int
    global_batch: int


@dataclass(frozen=True)
class Profile:
    """The sizes of one mode: the GPU check that fits one H100 in BUDGET_S, or its CPU rehearsal."""

    halves_shape: dict  # the 2K-row case: tokens = 16 sequences
    step_shape: dict  # the timed shape's correctness case: tokens = 4 sequences
    speed_shapes: tuple
    vocab_size: int
    lexicon_size: int
    documents_per_domain: int  # domain k gets (k + 1) times this many documents
    words_per_document: tuple
    seq_length: int
    models: dict
    warmup: int
    measured: int
    host_batch_calls: int
    gram_shapes: tuple = ((2 * NUM_DOMAINS, 256), (37, 70))  # the trainer's [2K, k]; three blocks of rows
    notes: list = field(default_factory=list)


def shape(tokens: int, in_features: int, out_features: int, dim: int) -> dict:
    return dict(tokens=tokens, in_features=in_features, out_features=out_features, dim=dim, num_domains=2 * NUM_DOMAINS)


GPU = Profile(
    halves_shape=shape(16 * 131, 512, 256, 256),
    step_shape=shape(4 * 2048, 8192, 2048, 256),
    speed_shapes=(shape(8192, 8192, 2048, 256), shape(16384, 8192, 2048, 256)),
    vocab_size=4096,
    lexicon_size=20000,
    documents_per_domain=16,
    words_per_document=(300, 700),
    seq_length=2048,
    models={
        "pythia-160m": Model(num_layers=12, hidden_size=768, heads=12, micro_batch=8, global_batch=32),
        "pythia-1b": Model(num_layers=16, hidden_size=2048, heads=8, micro_batch=4, global_batch=16),
    },
    warmup=4,
    measured=30,
    host_batch_calls=20,
)
CPU = Profile(
    halves_shape=shape(16 * 13, 96, 80, 32),
    step_shape=shape(4 * 64, 256, 128, 32),
    speed_shapes=(shape(128, 256, 128, 32), shape(256, 256, 128, 32)),
    vocab_size=500,
    lexicon_size=2000,
    documents_per_domain=4,
    words_per_document=(30, 80),
    seq_length=64,
    models={"tiny": Model(num_layers=2, hidden_size=64, heads=4, micro_batch=4, global_batch=8)},
    warmup=2,
    measured=4,
    host_batch_calls=5,
    notes=["CPU rehearsal: interpreted Triton and a tiny model; no number here is a performance measure."],
)
