#!/usr/bin/env python
"""Benchmark the data path: DynamicBlender against megatron.core's precomputed blend, and preprocessing.

    python bench/data_path.py [--quick] [--data-path data/demo/indexed/domains.json]
        [--tokenizer-model data/demo/tokenizer.model] [--output-dir bench/results]

1. Time to first batch, peak RSS and steps per second of our `DynamicBlender` and of megatron.core's
   `BlendedMegatronDatasetBuilder` on the same domains and static weights, for run lengths 1e5..1e8
   training samples (--quick: 1e5 and 1e6). Every build runs in a fresh process with a cold index
   cache, under a time and memory limit; a build that hits one is recorded as such.
2. Tokens per second of preprocessing the demo corpus (`tools/preprocess_domains.py`) with 1 and 2
   workers.

Writes <output-dir>/data_path.json and data_path.png and prints markdown tables to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import multiprocessing
import os
import runpy
import shutil
import sys
import time
import warnings
from typing import Callable

import psutil

from common import GIB, MIB, REPO, calls_per_second, describe_machine, progress, save_figure, say, write_json

RUN_LENGTHS = (10**5, 10**6, 10**7, 10**8)
QUICK_RUN_LENGTHS = (10**5, 10**6)
SEQ_LENGTH = 256
GLOBAL_BATCH_SIZE = 32
SEED = 1234
# Not the blender's default "969,30,1": megatron.core's GPTDataset loops forever in _get_num_epochs
# when a split owns no document (the 0.1% test share of a 271-document domain rounds to none).
# Both sides get the same training documents, [0, 0.969) of each domain.
SPLIT = "969,31,0"
PLAN_STEPS = 2000  # steps timed for planning only
READ_STEPS = 200  # steps timed for planning and reading every sample
TIME_LIMIT_S = 600.0
MEMORY_LIMIT_BYTES = 16 * 2**30
POLL_S = 0.05
TOKENIZER_TYPE = "SentencePieceTokenizer"


# ---------------------------------------------------------------- isolated measurements


def _quiet_imports() -> None:
    # megatron.core warns at import that Transformer Engine and Apex are missing; no GPU path runs here.
    warnings.filterwarnings("ignore", message=".*Transformer Engine and Apex are not installed.*")


def _child_entry(connection, function: Callable[..., dict], arguments: tuple) -> None:
    _quiet_imports()
    try:
        result = function(*arguments)
    except Exception as error:  # reported to the parent, which records it instead of crashing
        result = {"status": "error", "error": f"{type(error).__name__}: {error}"}
    connection.send(result)
    connection.close()


def _tree_rss(process: psutil.Process) -> int:
    """RSS of a process and its children (preprocessing workers count against the limit too)."""
    total = 0
    for member in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += member.memory_info().rss
    return total


def run_isolated(function: Callable[..., dict], *arguments) -> dict:
    """Run `function(*arguments)` in a fresh process; kill it past the time or memory limit."""
    context = multiprocessing.get_context("spawn")  # a clean interpreter: no warm caches or imports
    receiver, sender = context.Pipe(duplex=False)
    start = time.perf_counter()
    child = context.Process(target=_child_entry, args=(sender, function, arguments))
    child.start()
    sender.close()
    watched = psutil.Process(child.pid)
    observed_peak = 0
    stop_reason = None
    while not receiver.poll(POLL_S):
        if not child.is_alive():
            break
        with contextlib.suppress(psutil.NoSuchProcess):
            observed_peak = max(observed_peak, _tree_rss(watched))
        elapsed = time.perf_counter() - start
        if observed_peak > MEMORY_LIMIT_BYTES:
            stop_reason = f"killed: RSS {observed_peak / GIB:.1f} GiB passed the {MEMORY_LIMIT_BYTES / GIB:.0f} GiB limit after {elapsed:.0f} s"
        elif elapsed > TIME_LIMIT_S:
            stop_reason = f"killed: still running after {TIME_LIMIT_S:.0f} s (RSS {observed_peak / MIB:,.0f} MiB)"
        if stop_reason:
            for member in [*watched.children(recursive=True), watched]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    member.kill()
            break
    wall_s = time.perf_counter() - start
    if stop_reason is None and receiver.poll():
        result = receiver.recv()
    else:
        result = {"status": "error", "error": stop_reason or f"exited with code {child.exitcode} without a result"}
    child.join()
    result.setdefault("status", "ok")
    result["process_wall_s"] = wall_s
    result["observed_peak_rss_bytes"] = observed_peak
    return result


def _peak_rss_bytes() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _folder_bytes(folder: str) -> int:
    return sum(entry.stat().st_size for entry in os.scandir(folder) if entry.is_file()) if os.path.isdir(folder) else 0


def _load_inputs(data_path: str, tokenizer_model: str):
    from megatron_acodm.data.manifest import load_manifest
    from megatron_acodm.data.tokenizers import Tokenizer

    manifest = load_manifest(data_path)
    return manifest, Tokenizer(TOKENIZER_TYPE, tokenizer_model), manifest.initial_weights()


def _init_single_process_group() -> None:
    """megatron.core's blended index cache asks for the rank, so it needs a process group."""
    import torch.distributed

    from megatron_acodm.compat.distributed import free_port

    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)


def _steps_per_second(steps: int, step: Callable[[int], object], limit: int) -> float:
    """Steps a second of `step(0)`, `step(1)`, ... over `steps` timed steps after a few warm-up ones;
    past `limit` the indices start again at 0."""
    indices = itertools.count()
    return calls_per_second(lambda: step(next(indices) % limit), steps)


def measure_megatron(data_path: str, tokenizer_model: str, run_length: int, cache_dir: str) -> dict:
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig

    _init_single_process_group()
    manifest, tokenizer, weights = _load_inputs(data_path, tokenizer_model)
    rss_before = psutil.Process().memory_info().rss
    start = time.perf_counter()
    config = GPTDatasetConfig(
        random_seed=SEED,
        sequence_length=SEQ_LENGTH,
        blend=([domain.prefix for domain in manifest.domains], weights),
        split=SPLIT,
        path_to_cache=cache_dir,
        tokenizer=tokenizer,
        reset_position_ids=False,
        reset_attention_mask=False,
        eod_mask_loss=False,
        create_attention_mask=True,
    )
    train = BlendedMegatronDatasetBuilder(GPTDataset, [run_length, 0, 0], lambda: True, config).build()[0]
    build_s = time.perf_counter() - start
    first_batch = [train[index]["tokens"] for index in range(GLOBAL_BATCH_SIZE)]
    first_batch_s = time.perf_counter() - start
    peak_rss = _peak_rss_bytes()
    assert len(first_batch) == GLOBAL_BATCH_SIZE

    def plan(step: int) -> tuple:  # a step's (domain, sample) pairs are slices of the precomputed arrays
        window = slice(step * GLOBAL_BATCH_SIZE, (step + 1) * GLOBAL_BATCH_SIZE)
        return train.dataset_index[window], train.dataset_sample_index[window]

    def plan_and_read(step: int) -> None:
        for index in range(step * GLOBAL_BATCH_SIZE, (step + 1) * GLOBAL_BATCH_SIZE):
            train[index]

    steps_in_run = len(train) // GLOBAL_BATCH_SIZE
    return {
        "side": "megatron",
        "run_length": run_length,
        "samples_indexed": len(train),
        "build_s": build_s,
        "first_batch_s": first_batch_s,
        "rss_before_build_bytes": rss_before,
        "peak_rss_bytes": peak_rss,
        "index_cache_bytes": _folder_bytes(cache_dir),
        "plan_steps_per_s": _steps_per_second(min(PLAN_STEPS, steps_in_run), plan, steps_in_run),
        "plan_read_steps_per_s": _steps_per_second(min(READ_STEPS, steps_in_run), plan_and_read, steps_in_run),
    }


def measure_blender(data_path: str, tokenizer_model: str, run_length: int, cache_dir: str) -> dict:
    """Our side; `run_length` only labels the row: the blender takes no run length."""
    from megatron_acodm.data.blender import DynamicBlender
    from megatron_acodm.data.corpus import open_corpus

    manifest, tokenizer, weights = _load_inputs(data_path, tokenizer_model)
    rss_before = psutil.Process().memory_info().rss
    start = time.perf_counter()
    blender = DynamicBlender(
        open_corpus(manifest, tokenizer), seq_length=SEQ_LENGTH, global_batch_size=GLOBAL_BATCH_SIZE, seed=SEED,
        split=SPLIT, data_cache_path=cache_dir,
    )
    build_s = time.perf_counter() - start
    first_plan = blender.plan(0, weights)
    first_batch = [blender.sample(domain, sample)["tokens"] for domain, sample in zip(first_plan.domain_ids, first_plan.sample_ids)]
    first_batch_s = time.perf_counter() - start
    peak_rss = _peak_rss_bytes()
    assert len(first_batch) == GLOBAL_BATCH_SIZE

    def plan() -> None:  # each call plans the blender's next step
        blender.plan(blender.next_step, weights)

    def plan_and_read() -> None:
        step_plan = blender.plan(blender.next_step, weights)
        for domain, sample in zip(step_plan.domain_ids, step_plan.sample_ids):
            blender.sample(domain, sample)

    return {
        "side": "blender",
        "run_length": run_length,
        "samples_per_epoch": sum(len(dataset) for dataset in blender.train_datasets),
        "build_s": build_s,
        "first_batch_s": first_batch_s,
        "rss_before_build_bytes": rss_before,
        "peak_rss_bytes": peak_rss,
        "index_cache_bytes": _folder_bytes(cache_dir),
        "plan_steps_per_s": calls_per_second(plan, PLAN_STEPS),
        "plan_read_steps_per_s": calls_per_second(plan_and_read, READ_STEPS),
    }


def measure_preprocess(jsonl_dir: str, tokenizer_model: str, workers: int, output_dir: str) -> dict:
    """`tools/preprocess_domains.py` with a user's arguments, called in this fresh process once its
    imports are done: the time is the tokenizing and writing, not the interpreter's start-up."""
    preprocess_domains = runpy.run_path(os.path.join(REPO, "tools", "preprocess_domains.py"), run_name="preprocess_domains")
    from megatron_acodm.data.manifest import load_manifest

    argv = ["--input", jsonl_dir, "--output-dir", output_dir, "--tokenizer-type", TOKENIZER_TYPE,
            "--tokenizer-model", tokenizer_model, "--workers", str(workers), "--append-eod", "--force"]
    log = io.StringIO()  # the tool's per-domain lines: not this benchmark's output
    start = time.perf_counter()
    with contextlib.redirect_stderr(log):
        status = preprocess_domains["main"](argv)
    seconds = time.perf_counter() - start
    if status != 0:
        raise RuntimeError(f"tools/preprocess_domains.py exited with {status}: {log.getvalue()[-2000:]}")
    tokens = sum(domain.tokens for domain in load_manifest(os.path.join(output_dir, "domains.json")).domains)
    return {"workers": workers, "tokens": tokens, "preprocess_s": seconds, "tokens_per_s": tokens / seconds}


# ---------------------------------------------------------------- the benchmark


def _fresh_folder(path: str) -> str:
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


def benchmark_first_batch(args: argparse.Namespace, run_lengths: tuple[int, ...], bar) -> list[dict]:
    rows = []
    for run_length in run_lengths:
        for side, measure in (("megatron", measure_megatron), ("blender", measure_blender)):
            cache_dir = _fresh_folder(os.path.join(args.scratch_dir, f"cache-{side}-{run_length:.0e}"))
            say(f"[{side} {run_length:.0e} samples] building with a cold cache in {cache_dir} ...")
            row = run_isolated(measure, args.data_path, args.tokenizer_model, run_length, cache_dir)
            row.update(side=side, run_length=run_length)
            shutil.rmtree(cache_dir, ignore_errors=True)
            if row["status"] == "ok":
                say(
                    f"[{side} {run_length:.0e} samples] first batch {row['first_batch_s']:.3f} s, peak RSS "
                    f"{row['peak_rss_bytes'] / MIB:,.0f} MiB, {row['plan_steps_per_s']:,.0f} plans/s, "
                    f"{row['plan_read_steps_per_s']:,.1f} plan+read steps/s"
                )
            else:
                say(f"[{side} {run_length:.0e} samples] {row['error']}")
            rows.append(row)
            bar.update()
    return rows


def benchmark_preprocess(args: argparse.Namespace, bar) -> list[dict]:
    rows = []
    for workers in (1, 2):
        output_dir = _fresh_folder(os.path.join(args.scratch_dir, f"preprocess-{workers}-workers"))
        say(f"[preprocess {workers} worker(s)] tokenizing {args.jsonl_dir} into {output_dir} ...")
        row = run_isolated(measure_preprocess, args.jsonl_dir, args.tokenizer_model, workers, output_dir)
        row["workers"] = workers
        if row["status"] == "ok":
            say(f"[preprocess {workers} worker(s)] {row['tokens_per_s']:,.0f} tokens/s, {row['process_wall_s']:.1f} s wall")
        else:
            say(f"[preprocess {workers} worker(s)] {row['error']}")
        rows.append(row)
        bar.update()
    return rows


def describe_corpus(data_path: str, jsonl_dir: str) -> dict:
    from megatron_acodm.data.manifest import load_manifest

    manifest = load_manifest(data_path)
    return {
        "domains": [
            {"name": domain.name, "documents": domain.documents, "tokens": domain.tokens, "weight": weight}
            for domain, weight in zip(manifest.domains, manifest.initial_weights())
        ],
        "documents": sum(domain.documents or 0 for domain in manifest.domains),
        "tokens": sum(domain.tokens or 0 for domain in manifest.domains),
        "bin_bytes": sum(os.path.getsize(f"{domain.prefix}.bin") for domain in manifest.domains),
        "jsonl_bytes": _folder_bytes(jsonl_dir),
    }


# ---------------------------------------------------------------- reporting


def _cell(row: dict, key: str, scale: float = 1.0, form: str = "{:,.3f}") -> str:
    return form.format(row[key] / scale) if row["status"] == "ok" else "—"


def markdown_tables(results: dict) -> str:
    lines = [
        "| run length | side | time to first batch (s) | build (s) | peak RSS (MiB) | index cache (MiB) | plans/s | plan+read steps/s |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results["first_batch"]:
        first_batch = _cell(row, "first_batch_s") if row["status"] == "ok" else row["error"]
        lines.append(
            f"| {row['run_length']:.0e} | {row['side']} | {first_batch} | {_cell(row, 'build_s')} "
            f"| {_cell(row, 'peak_rss_bytes', MIB, '{:,.0f}')} | {_cell(row, 'index_cache_bytes', MIB, '{:,.1f}')} "
            f"| {_cell(row, 'plan_steps_per_s', form='{:,.0f}')} | {_cell(row, 'plan_read_steps_per_s', form='{:,.1f}')} |"
        )
    lines += ["", "| preprocess workers | tokens | preprocess (s) | tokens/s | process wall, with start-up (s) |", "|---:|---:|---:|---:|---:|"]
    for row in results["preprocess"]:
        if row["status"] == "ok":
            lines.append(
                f"| {row['workers']} | {row['tokens']:,} | {row['preprocess_s']:.2f} | {row['tokens_per_s']:,.0f} "
                f"| {row['process_wall_s']:.2f} |"
            )
        else:
            lines.append(f"| {row['workers']} | — | — | {row['error']} | {row['process_wall_s']:.2f} |")
    return "\n".join(lines)


def plot(results: dict, path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as pyplot
    except ImportError:
        say(f"matplotlib is not installed: skipping {path} (`pip install matplotlib` to get it)")
        return
    figure, (startup, preprocess) = pyplot.subplots(1, 2, figsize=(11, 4.2))
    for side, label, marker in (("megatron", "megatron.core BlendedMegatronDatasetBuilder", "o"), ("blender", "DynamicBlender", "s")):
        rows = [row for row in results["first_batch"] if row["side"] == side]
        finished = [row for row in rows if row["status"] == "ok"]
        line = startup.plot(
            [row["run_length"] for row in finished], [row["first_batch_s"] for row in finished], marker=marker, label=label
        )[0]
        for row in rows:
            if row["status"] != "ok":  # show where a stopped build was when it was stopped
                startup.plot(row["run_length"], row["process_wall_s"], "x", color=line.get_color(), markersize=10)
                startup.annotate("stopped", (row["run_length"], row["process_wall_s"]), textcoords="offset points", xytext=(6, -4))
    startup.set(xscale="log", yscale="log", xlabel="run length (training samples)", ylabel="time to first batch (s)")
    startup.set_title(f"time to first batch (seq {SEQ_LENGTH}, global batch {GLOBAL_BATCH_SIZE})")
    startup.grid(True, which="both", alpha=0.3)
    startup.legend()
    finished = [row for row in results["preprocess"] if row["status"] == "ok"]
    bars = preprocess.bar([str(row["workers"]) for row in finished], [row["tokens_per_s"] for row in finished], color="tab:green")
    preprocess.bar_label(bars, labels=[f"{row['tokens_per_s']:,.0f}" for row in finished])
    preprocess.set(xlabel="workers", ylabel="tokens / s")
    preprocess.set_title(f"preprocess_domains ({results['machine']['cpu_count']} CPUs)")
    figure.tight_layout()
    save_figure(figure, path, dpi=120)
    pyplot.close(figure)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="run lengths 1e5 and 1e6 only")
    parser.add_argument("--data-path", default="data/demo/indexed/domains.json", help="the preprocessed corpus' manifest")
    parser.add_argument("--tokenizer-model", default="data/demo/tokenizer.model")
    parser.add_argument("--jsonl-dir", default="data/demo/jsonl", help="the JSONL corpus to time preprocessing on")
    parser.add_argument("--scratch-dir", default="data/bench_scratch", help="index caches and preprocess outputs go here")
    parser.add_argument("--output-dir", default="bench/results")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    for path in (args.data_path, args.tokenizer_model, args.jsonl_dir):
        if not os.path.exists(path):
            print(f"error: {path} does not exist; build the demo corpus with tools/build_demo_corpus.py", file=sys.stderr)
            return 2
    _quiet_imports()
    run_lengths = QUICK_RUN_LENGTHS if args.quick else RUN_LENGTHS
    results = {
        "config": {
            "run_lengths": list(run_lengths),
            "seq_length": SEQ_LENGTH,
            "global_batch_size": GLOBAL_BATCH_SIZE,
            "seed": SEED,
            "split": SPLIT,
            "weights": "proportional to tokens (the manifest's initial weights), static",
            "plan_steps": PLAN_STEPS,
            "read_steps": READ_STEPS,
            "time_limit_s": TIME_LIMIT_S,
            "memory_limit_bytes": MEMORY_LIMIT_BYTES,
            "preprocess": {"tokenizer_type": TOKENIZER_TYPE, "append_eod": True},
        },
        "machine": describe_machine(("cpu_count", "memory_bytes", "python", "torch", "megatron_core", "numpy")),
        "corpus": describe_corpus(args.data_path, args.jsonl_dir),
    }
    with progress(2 * len(run_lengths) + 2, "data path", "build") as bar:
        results["first_batch"] = benchmark_first_batch(args, run_lengths, bar)
        results["preprocess"] = benchmark_preprocess(args, bar)
    os.makedirs(args.output_dir, exist_ok=True)
    write_json(os.path.join(args.output_dir, "data_path.json"), results)
    plot(results, os.path.join(args.output_dir, "data_path.png"))
    print(markdown_tables(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
