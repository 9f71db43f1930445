"""Part 5, host batch: what building one step's batch costs the host (the blender's plan, the sketch
rows, reading and collating, as the training loop does), at each model's shape."""

from __future__ import annotations

from .corpus import Corpus
from .profiles import SEED, THREADS, Model, Profile


def host_batch_ms(corpus: Corpus, model: Model, seq_length: int, calls: int) -> float:
    """Milliseconds to plan, read and collate one step's batch with its sketch rows, as the training
    loop does before every step (on its critical path: nothing prefetches)."""
    import itertools

    from common import calls_per_second
    from megatron_acodm.data import DynamicBlender, Tokenizer, open_corpus, parse_data_path
    from megatron_acodm.sketch import half_segments
    from megatron_acodm.training.batches import rank_micro_batches

    blender = DynamicBlender(open_corpus(parse_data_path([corpus.domains_json]), Tokenizer("SentencePieceTokenizer", corpus.tokenizer_model)),
                             seq_length=seq_length, global_batch_size=model.global_batch, seed=SEED, split="100")
    steps = itertools.count()

    def build() -> list:
        plan = blender.plan(next(steps), blender.initial_weights)
        return rank_micro_batches(blender.sample, plan.domain_ids, plan.sample_ids, model.micro_batch, rank=0, size=1,
                                  sketch_segments=half_segments(plan.domain_ids))

    return 1e3 / calls_per_second(build, calls)


def host_batch(profile: Profile, corpus: Corpus) -> dict:
    models = {name: {"global_batch": model.global_batch, "micro_batch": model.micro_batch,
                     "batch_ms": host_batch_ms(corpus, model, profile.seq_length, profile.host_batch_calls)}
              for name, model in profile.models.items()}
    return {"models": models, "threads": THREADS, "ok": True}
