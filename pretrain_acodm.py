"""megatron-acodm entry point.

The Megatron-Core trainer is not in this release yet. Until it lands, this plans and reads the
global batches of `--train-iters` steps under the `--data-path` weights with the DynamicBlender,
logging the realised mixture and the data path's throughput: a dry run of a training job's data.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    data = parser.add_argument_group("data (Megatron-LM names)")
    data.add_argument("--data-path", nargs="+", required=True, help="a domains.json, or Megatron's [w1] prefix1 [w2] prefix2 ...")
    data.add_argument("--split", default="969,30,1", help="train,valid,test document shares per domain")
    data.add_argument("--data-cache-path", default=None, help="where megatron.core caches sample indices")
    data.add_argument("--tokenizer-type", default="SentencePieceTokenizer")
    data.add_argument("--tokenizer-model", required=True)
    data.add_argument("--seq-length", type=int, default=1024)
    data.add_argument("--global-batch-size", type=int, default=32)
    data.add_argument("--train-iters", type=int, default=100)
    data.add_argument("--seed", type=int, default=1234)
    data.add_argument("--log-interval", type=int, default=10)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from megatron_acodm.data import DataError, DynamicBlender, Tokenizer, parse_data_path

    try:
        tokenizer = Tokenizer(args.tokenizer_type, args.tokenizer_model)
        blender = DynamicBlender(
            parse_data_path(args.data_path),
            tokenizer,
            seq_length=args.seq_length,
            global_batch_size=args.global_batch_size,
            seed=args.seed,
            split=args.split,
            data_cache_path=args.data_cache_path,
        )
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    weights = blender.initial_weights
    print("pretrain_acodm: the trainer is not in this release; planning and reading the data of "
          f"{args.train_iters} steps under the --data-path weights", flush=True)
    print("domains: " + ", ".join(f"{name} {weight:.3f}" for name, weight in zip(blender.names, weights)), flush=True)
    started, tokens = time.perf_counter(), 0
    for step in range(args.train_iters):
        plan = blender.plan(step, weights)
        for domain_id, sample_id in zip(plan.domain_ids, plan.sample_ids):
            tokens += int(blender.sample(int(domain_id), int(sample_id))["loss_mask"].sum())
        if (step + 1) % args.log_interval == 0 or step + 1 == args.train_iters:
            elapsed = time.perf_counter() - started
            shares = blender.realised_counts / blender.realised_counts.sum()
            print(
                f" iteration {step + 1:8d}/{args.train_iters:8d} | elapsed (s): {elapsed:7.1f} | "
                f"tokens/s: {tokens / elapsed:10.0f} | realised share: "
                + " ".join(f"{name} {share:.3f}" for name, share in zip(blender.names, shares)),
                flush=True,
            )
    deviation = numpy.abs(blender.realised_counts - weights * args.global_batch_size * args.train_iters).max()
    print(f"done: largest |realised - target| count over domains: {deviation:.3f} samples")
    return 0


if __name__ == "__main__":
    sys.exit(main())
