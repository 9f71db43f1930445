"""What building explicit attention masks on the host costs one data-parallel rank per step, at the
1B recipe's shape (examples/gpu_pythia_1b.sh: seq 2048, micro-batch 4, global batch 1024; 8 GPUs
at TP=2 give 4 data-parallel ranks, 256 samples and 64 micro-batches each).

    python bench/attention_mask.py [--data-path data/demo/indexed/domains.json] [--samples 256] [--output-dir bench/results]

The same step's samples are read and collated into micro-batches (`training.batches.micro_batches`,
what the trainer does) by two blenders that differ only in `create_attention_mask`: megatron.core's
GPTDataset then returns a `[1, seq, seq]` causal mask with every sample, which the collation stacks
and the step would copy to the GPU, although the attention kernel applies the causal mask itself.
Writes attention_mask.json.
"""

from __future__ import annotations

import argparse
import os
import warnings

import common

SEQ_LENGTH = 2048
MICRO_BATCH = 4
GLOBAL_BATCH = 1024
SEED = 1234


def measure(data_path: str, tokenizer_model: str, samples: int, create_attention_mask: bool, repeats: int) -> dict:
    from megatron_acodm.data import DynamicBlender, Tokenizer, open_corpus, parse_data_path
    from megatron_acodm.training.batches import micro_batches

    blender = DynamicBlender(
        open_corpus(parse_data_path([data_path]), Tokenizer("SentencePieceTokenizer", tokenizer_model)),
        seq_length=SEQ_LENGTH, global_batch_size=GLOBAL_BATCH, seed=SEED, create_attention_mask=create_attention_mask,
    )
    plan = blender.plan(0, blender.initial_weights)
    domains, sample_ids = plan.domain_ids[:samples], plan.sample_ids[:samples]
    batches = micro_batches(blender.sample, domains, sample_ids, MICRO_BATCH)
    host_bytes = sum(tensor.numel() * tensor.element_size() for batch in batches for tensor in batch.values())
    timing = common.time_cpu(lambda: micro_batches(blender.sample, domains, sample_ids, MICRO_BATCH), repeats)
    return {"create_attention_mask": create_attention_mask, "step_ms": timing["median_ms"], "min_ms": timing["min_ms"],
            "repeats": timing["repeats"], "host_bytes_per_step": host_bytes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-path", default=os.path.join(common.REPO, "data/demo/indexed/domains.json"))
    parser.add_argument("--tokenizer-model", default=os.path.join(common.REPO, "data/demo/tokenizer.model"))
    parser.add_argument("--samples", type=int, default=GLOBAL_BATCH // 4, help="one data-parallel rank's samples per step")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output-dir", default=os.path.join(common.REPO, "bench/results"))
    options = parser.parse_args()
    warnings.filterwarnings("ignore", message=".*Transformer Engine and Apex are not installed.*")
    if not os.path.isfile(options.data_path):
        raise SystemExit(f"error: {options.data_path} missing; build it with examples/cpu_quickstart.sh (its first two steps)")
    results = [measure(options.data_path, options.tokenizer_model, options.samples, mask, options.repeats) for mask in (True, False)]
    with_mask, without = results
    summary = {
        "saved_ms_per_step": with_mask["step_ms"] - without["step_ms"],
        "time_ratio": with_mask["step_ms"] / without["step_ms"],
        "mask_mib_per_step": (with_mask["host_bytes_per_step"] - without["host_bytes_per_step"]) / common.MIB,
    }
    for result in results:
        common.say(f"create_attention_mask={result['create_attention_mask']}: {result['step_ms']:.1f} ms per step, "
                   f"{result['host_bytes_per_step'] / common.MIB:.1f} MiB collated")
    common.write_json(os.path.join(options.output_dir, "attention_mask.json"), {
        "shape": {"seq_length": SEQ_LENGTH, "micro_batch": MICRO_BATCH, "samples_per_rank": options.samples},
        "data_path": options.data_path,
        "machine": common.describe_machine(["cpu_model", "cpu_count", "torch", "megatron_core"]),
        "results": results,
        "summary": summary,
    })


if __name__ == "__main__":
    main()
