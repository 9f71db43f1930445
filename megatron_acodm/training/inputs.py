"""A run's inputs: opened and checked before any rank joins a process group, then built into the
datasets every rank reads.

Everything a user can get wrong in the data, the tokenizer or a path is seen here alike by every
rank, before anything starts: one `error:` line and no rank left waiting for another. Only the
datasets (`build_blender`, `build_targets`) need the process group, for megatron.core's index cache.
"""

from __future__ import annotations

import os
from argparse import Namespace
from dataclasses import dataclass
from typing import Optional

import torch

from megatron_acodm.data import Corpus, DynamicBlender, Tokenizer, open_corpus, parse_data_path
from megatron_acodm.data.targets import TargetSets, open_target_sets
from megatron_acodm.errors import UserError
from megatron_acodm.metrics.weights_and_biases import check_wandb
from megatron_acodm.mixing import MIXERS
from megatron_acodm.model import pad_vocab_size
from megatron_acodm.output_paths import check_output_file, check_output_folder


@dataclass(frozen=True)
class RunInputs:
    tokenizer: Tokenizer
    corpus: Corpus
    targets: Optional[Corpus]  # the target sets of --target-data-path


def build_tokenizer(args: Namespace) -> Tokenizer:
    """The tokenizer of --tokenizer-model; fills in `args.vocab_size` and the padded vocabulary."""
    tokenizer = Tokenizer(args.tokenizer_type, args.tokenizer_model)
    if args.vocab_size is not None and args.vocab_size != tokenizer.vocab_size:
        raise UserError(
            f"--vocab-size {args.vocab_size} but --tokenizer-model {args.tokenizer_model} has "
            f"{tokenizer.vocab_size} ids; give the tokenizer's size or drop --vocab-size"
        )
    args.vocab_size = tokenizer.vocab_size
    args.padded_vocab_size = pad_vocab_size(tokenizer.vocab_size, args.make_vocab_size_divisible_by, args.tensor_model_parallel_size)
    return tokenizer


def open_inputs(args: Namespace) -> RunInputs:
    """The tokenizer and the corpora, checked against each other."""
    tokenizer = build_tokenizer(args)
    corpus = open_corpus(parse_data_path(args.data_path), tokenizer)
    targets = open_target_sets(args.target_data_path, tokenizer) if args.target_data_path else None
    return RunInputs(tokenizer, corpus, targets)


def check_output_paths(args: Namespace) -> None:
    """Every place the run writes to (W&B's package and folder too), and --load, before the run starts."""
    for option, folder in (("--save", args.save), ("--data-cache-path", args.data_cache_path), ("--tensorboard-dir", args.tensorboard_dir)):
        if folder is not None:
            check_output_folder(folder, option)
    check_output_file(args.metrics_path, "--metrics-path", "metrics.jsonl")
    check_wandb(args)
    if args.load is not None and args.load != args.save and os.path.exists(args.load) and not os.path.isdir(args.load):
        raise UserError(f"--load {args.load}: is a file; give the --save folder of an earlier run")


def _rank_zero_first(build):
    """`build()` on every rank, rank 0 first, so it alone writes megatron's index cache."""
    built = build() if torch.distributed.get_rank() == 0 else None
    torch.distributed.barrier()
    return built if built is not None else build()


def min_samples_per_domain(args: Namespace, num_domains: int) -> int:
    """--min-samples-per-domain, or the mixer's own (`Mixer.samples_per_domain`), taking no more than
    half the global batch in all: the mixer's weights still decide the other half."""
    if args.min_samples_per_domain is not None:
        return args.min_samples_per_domain
    return min(MIXERS[args.mixer].samples_per_domain(args), args.global_batch_size // (2 * num_domains))


def build_blender(args: Namespace, corpus: Corpus) -> DynamicBlender:
    """The blender on every rank."""
    return _rank_zero_first(
        lambda: DynamicBlender(
            corpus,
            seq_length=args.seq_length,
            global_batch_size=args.global_batch_size,
            seed=args.seed,
            split=args.split,
            min_samples_per_domain=min_samples_per_domain(args, len(corpus.manifest.names)),
            data_cache_path=args.data_cache_path,
            reset_position_ids=args.reset_position_ids,
            reset_attention_mask=args.reset_attention_mask,
            eod_mask_loss=args.eod_mask_loss,
            # The attention kernel applies the causal mask itself; only document-wise masks must be built.
            create_attention_mask=args.reset_attention_mask,
        )
    )


def build_targets(args: Namespace, targets: Optional[Corpus], blender: DynamicBlender) -> Optional[TargetSets]:
    """The target sets on every rank (None without), shaped as the training data."""
    if targets is None:
        return None
    return _rank_zero_first(lambda: TargetSets(targets, blender.config, args.target_split))
