#!/usr/bin/env python
"""The GPU path checked end to end, sized for one H100 in under 8 minutes; `bench/gpu_check.sh` runs it.

    bench/gpu_check.sh OUT_DIR [WHEEL_DIR] [--cpu]
    python bench/gpu_check.py OUT_DIR [--wheel-dir DIR] [--cpu]     (what the shell script runs)
    python bench/gpu_check.py --list-missing                         (the WHEELS not installed)

Parts, each timed, written to OUT_DIR/gpu_check.json and OUT_DIR/gpu_check.md as soon as it ends
(a run cut short keeps what it finished); a part that fails is recorded with its error and the
others still run, since one device session should bring back everything it can:
1. versions: Python, torch, CUDA, Triton, megatron-core, the GPU; first, WHEELS must import, or
   one `error:` line names the missing ones and the `pip download` command that fetches them.
2. kernel_correctness: the Triton sketch kernels through `sketch.backend` against the torch
   reference, fp32 and bf16: the ragged case the tests interpret (203 tokens, one empty domain), the
   trainer's 2K rows (row 2k + h for half h of domain k, from `half_segments`, with empty halves and
   a sequence length that is no multiple of the token tile), and the timed step shape; Gram matrices
   of [2K, k] and of three row blocks. Passing: max |triton - reference| / max |reference| at most
   TOLERANCE, and rows without tokens exactly zero.
3. kernel_speed: `bench/sketch_kernels.py`'s timing at the Pythia-1B shape (8k and 16k tokens,
   linear_fc2 8192 -> 2048, k = 256, 16 rows), both implementations, against the GPU's roofline.
4. corpus: 8 domains of random words, a SentencePiece BPE tokenizer trained on them (the demo
   corpus's trainer, 4096 entries: a speed check needs no real vocabulary) and the project's own
   indexing (`megatron_acodm.indexing`); the GPU machine has neither a corpus nor a network.
5. host_batch: what building one step's batch costs the host (the blender's plan, the sketch
   rows, reading and collating, as the training loop does), at each model's shape.
6. training: Pythia-like 160M (12 x 768, 12 heads) and 1B (16 x 2048, 8 heads) models, bf16, seq
   2048, each `--mixer static`, `--mixer acodm` and the acodm proxy (`--acodm-policy`: the policy
   the 160M acodm run exports), in that order, each a fresh `pretrain_acodm.py` (through
   `bench/measured_run.py`, which reads its peak CUDA memory); the step times are the metrics
   JSONL's `iteration_ms` after a few warm-up steps. Without Transformer Engine (a bare image) the
   model has Megatron's local layer spec and unfused attention, so the utilisation is a floor.

--cpu: the same parts on tiny shapes (Triton interpreted, `TRITON_INTERPRET=1`; a 2-layer x 64
model, seq 64, a few steps), so that tests/test_gpu_check.py keeps this script working where no GPU
is. Without --cpu a machine without CUDA is refused rather than checked on the CPU by surprise.
Exit status: 0 when every part passed, 1 when one failed (the JSON says which), 2 for bad input.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import importlib
import importlib.util
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# What megatron-core 0.16.1 and this project need that a bare PyTorch image (torch, Triton, numpy,
# sentencepiece, pytest) lacks, as the wheels to carry (the versions tested here) and the module
# that must import. psutil: megatron.core's checkpoint saver; tqdm: the trainer's logs.
WHEELS = (
    ("megatron-core==0.16.1", "megatron.core"),
    ("psutil==7.2.2", "psutil"),
    ("tqdm==4.70.1", "tqdm"),
)
PIP_DOWNLOAD = (
    "python3 -m pip download --no-deps --only-binary=:all: --python-version {python} --implementation cp "
    "--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d {folder} {names}"
)
BUDGET_S = 480  # one H100 call, machine start excluded
WHEEL_SITE = "/tmp/site"  # where gpu_check.sh installs the wheels
CPU_TIMING_REPEATS = 3  # calls timed per kernel on the CPU; on a GPU do_bench decides
# max |triton - reference| / max |reference|: the same exact products (bf16 x bf16 is exact in fp32)
# summed in another fp32 order; the interpreted tests measure about 3e-7.
TOLERANCE = 1e-4
MIXERS = ("static", "acodm", "proxy")
SEED = 1234
THREADS = 1  # the trainer's OpenMP threads, as torchrun gives each of 8 ranks on a node
SUMMARY = "gpu_check.md"
REPORT = "gpu_check.json"
# Sequences' domains of the 2K-row case: domain 7 absent, domains 2 and 4 with one sequence, so
# rows 5, 9, 14 and 15 get no tokens.
HALF_DOMAINS = (0, 3, 0, 1, 3, 2, 0, 3, 5, 1, 3, 4, 6, 5, 6, 6)
STEP_DOMAINS = (0, 3, 3, 6)  # the 4 sequences of the timed shape's micro-batch
NUM_DOMAINS = 8


# ---------------------------------------------------------------- what must import


def installed(module: str) -> None:
    """Raise ImportError unless `module` is installed, without running it (no torch import: fast)."""
    if importlib.util.find_spec(module) is None:
        raise ModuleNotFoundError(f"No module named {module!r}")


def missing_wheels(load: Callable[[str], object] = importlib.import_module) -> list[tuple[str, str]]:
    """(NAME==VERSION, why) of every wheel in WHEELS whose module `load` fails on."""
    missing = []
    for requirement, module in WHEELS:
        try:
            load(module)
        except ImportError as error:
            missing.append((requirement, str(error)))
    return missing


def missing_wheels_message(missing: list[tuple[str, str]], wheel_dir: str) -> str:
    what = "; ".join(f"{requirement} ({why})" for requirement, why in missing)
    held = "has wheels, but not these" if glob.glob(os.path.join(wheel_dir, "*.whl")) else "has no wheels"
    names = " ".join(requirement for requirement, _ in missing)
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    fetch = PIP_DOWNLOAD.format(python=python, folder=wheel_dir, names=names)
    return f"missing {what}, and the wheel folder {wheel_dir} {held}; fetch them where PyPI is reachable with: {fetch}"


# ---------------------------------------------------------------- sizes of the two modes


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


# ---------------------------------------------------------------- 1. versions


def versions(device_name: str) -> dict:
    import torch

    from common import describe_machine

    facts = describe_machine(
        ("python", "torch", "cuda", "triton", "megatron-core", "numpy", "sentencepiece", "device_name", "gpu_memory_gib",
         "cpu_count", "cpu_model", "layer_spec", "megatron_core_from_wheels"),
        cuda=torch.version.cuda,
        device_name=device_name,
        gpu_memory_gib=torch.cuda.get_device_properties(0).total_memory / 2**30 if torch.cuda.is_available() else None,
        # What the model provider picks: without Transformer Engine, unfused attention.
        layer_spec="transformer_engine" if importlib.util.find_spec("transformer_engine") else "local",
        megatron_core_from_wheels=WHEEL_SITE in importlib.import_module("megatron.core").__file__,
    )
    return {**facts, "wheels": [requirement for requirement, _ in WHEELS], "ok": True}


# ---------------------------------------------------------------- 2. kernel correctness


def halves_inputs(shape: dict, sequence_domains: tuple, dtype, device: str):
    """`inputs` whose tokens carry the rows the trainer gives them: equal sequences, each domain's
    sequences dealt into two halves (`half_segments`: row 2k + h)."""
    import torch

    from megatron_acodm.sketch import half_segments
    from megatron_acodm.sketch.kernel_inputs import inputs

    rows = torch.from_numpy(half_segments(sequence_domains)).repeat_interleave(shape["tokens"] // len(sequence_domains))
    return inputs(**shape, dtype=dtype, device=device, token_domain=rows)


def projection_cases(profile: Profile) -> dict[str, Callable]:
    from megatron_acodm.sketch.kernel_inputs import ragged_inputs

    return {
        "ragged": ragged_inputs,
        "halves": partial(halves_inputs, profile.halves_shape, HALF_DOMAINS),
        "step": partial(halves_inputs, profile.step_shape, STEP_DOMAINS),
    }


def agreement(case: str, operation: str, dtype, got, expected, empty_rows=None) -> dict:
    """How far the kernel is from the reference, and whether that passes."""
    from megatron_acodm.sketch.kernel_inputs import relative_difference

    difference = relative_difference(got, expected)
    result = {"case": case, "operation": operation, "dtype": str(dtype).removeprefix("torch."), "shape": list(got.shape),
              "relative_difference": difference, "tolerance": TOLERANCE, "ok": difference <= TOLERANCE}
    if empty_rows is not None:
        result["empty_rows"] = int(empty_rows.sum())
        result["empty_rows_exact_zero"] = not bool(got[empty_rows].any())
        result["ok"] = result["ok"] and result["empty_rows_exact_zero"]
    return result


def kernel_correctness(profile: Profile, device: str) -> dict:
    import torch

    from megatron_acodm.sketch import backend, reference
    from megatron_acodm.sketch.kernel_inputs import sketch_rows

    chosen, why = backend.choose_backend(torch.device(device))
    cases = []
    for case, make in projection_cases(profile).items():
        for dtype in (torch.float32, torch.bfloat16):
            arguments = make(dtype, device)
            token_domain, num_rows = arguments[4], arguments[5]
            empty = torch.bincount(token_domain, minlength=num_rows) == 0
            got = backend.project_and_segment_sum(*arguments)
            cases.append(agreement(case, "project_and_segment_sum", dtype, got, reference.project_and_segment_sum(*arguments), empty))
    for rows, columns in profile.gram_shapes:
        sketches = sketch_rows(rows, columns, device)
        cases.append(agreement(f"{rows}x{columns}", "gram", torch.float32, backend.gram(sketches), reference.gram(sketches)))
    result = {
        "backend": chosen, "backend_reason": why, "tolerance": TOLERANCE,
        "tolerance_meaning": "max |triton - reference| / max |reference|; rows without tokens must be exactly zero",
        "cases": cases, "ok": chosen == "triton" and all(case["ok"] for case in cases),
    }
    if not result["ok"]:
        wrong = [f"{case['case']} {case['operation']} {case['dtype']}" for case in cases if not case["ok"]]
        result["error"] = f"backend {chosen} ({why})" if chosen != "triton" else f"beyond tolerance: {', '.join(wrong)}"
    return result


# ---------------------------------------------------------------- 3. kernel speed


def faster(results: list[dict]) -> list[dict]:
    """Per operation and token count: which implementation's median is lower, and by how much."""
    verdicts = []
    for operation, tokens in dict.fromkeys((row["operation"], row["tokens"]) for row in results):
        mine = [row for row in results if (row["operation"], row["tokens"]) == (operation, tokens)]
        rows = sorted(mine, key=lambda row: row["median_ms"])
        verdicts.append({"operation": operation, "tokens": tokens, "faster": rows[0]["implementation"],
                         "speedup": rows[-1]["median_ms"] / rows[0]["median_ms"]})
    return verdicts


def kernel_speed(profile: Profile, device: str, device_name: str) -> dict:
    from megatron_acodm.sketch import kernels, reference
    from sketch_kernels import realistic_shapes

    implementations = {"reference": reference, "triton": kernels}
    results = realistic_shapes(implementations, device, device_name, CPU_TIMING_REPEATS, profile.speed_shapes)
    return {"results": results, "faster": faster(results), "ok": True,
            "timing": "triton.testing.do_bench on a GPU (L2 flushed per call); torch.utils.benchmark on the CPU"}


# ---------------------------------------------------------------- 4. corpus


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


# ---------------------------------------------------------------- 5. host-side batch building


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


# ---------------------------------------------------------------- 6. training


def pretrain_argv(profile: Profile, corpus: Corpus, model: Model, mixer: str, metrics_path: str) -> list[str]:
    """`pretrain_acodm.py`'s arguments, alike for every mixer but `--mixer`: the GPU recipes' model
    settings (examples/gpu_common.sh) at a constant learning rate, one log record a step, no evaluation."""
    seq = str(profile.seq_length)
    return [
        "--data-path", corpus.domains_json, "--split", "100", "--data-cache-path", corpus.cache,
        "--tokenizer-type", "SentencePieceTokenizer", "--tokenizer-model", corpus.tokenizer_model,
        "--num-layers", str(model.num_layers), "--hidden-size", str(model.hidden_size),
        "--num-attention-heads", str(model.heads), "--seq-length", seq, "--max-position-embeddings", seq,
        "--position-embedding-type", "rope", "--rotary-percent", "0.25", "--normalization", "LayerNorm",
        "--untie-embeddings-and-output-weights", "--hidden-dropout", "0", "--attention-dropout", "0", "--bf16",
        "--micro-batch-size", str(model.micro_batch), "--global-batch-size", str(model.global_batch),
        "--train-iters", str(profile.warmup + profile.measured), "--lr", "3e-4", "--lr-decay-style", "constant",
        "--seed", str(SEED), "--log-interval", "1", "--eval-iters", "0", "--metrics-path", metrics_path,
        "--mixer", "static" if mixer == "static" else "acodm",
    ]


def policy_argv(mixer: str, policy: str) -> list[str]:
    """The first acodm run exports the policy that every proxy run then loads."""
    if mixer == "proxy":
        return ["--acodm-policy", policy]
    if mixer == "acodm" and not os.path.exists(policy):
        return ["--acodm-export-policy", policy]
    return []


def train_records(metrics_path: str) -> int:
    """Steps logged so far (one record a step with --log-interval 1), for the progress bar."""
    if not os.path.exists(metrics_path):
        return 0
    with open(metrics_path, encoding="utf-8", errors="replace") as stream:
        return sum('"kind": "train"' in line for line in stream)


def child_environment() -> dict:
    """The trainer's environment: one OpenMP thread, and real kernels even in the CPU rehearsal
    (interpreted Triton is for the correctness part only)."""
    from common import child_env

    env = child_env(THREADS)
    env.pop("TRITON_INTERPRET", None)
    return env


def read_peak_memory(path: str) -> dict:
    if not os.path.exists(path):  # the run failed before writing it
        return {"max_memory_allocated_mib": None, "max_memory_reserved_mib": None}
    with open(path) as stream:
        return json.load(stream)


def train_run(profile: Profile, corpus: Corpus, name: str, mixer: str, scratch: str, bar) -> dict:
    """One fresh training process; its step times after the warm-up and its peak memory."""
    from common import run_process, tail
    from overhead import step_times

    folder = os.path.join(scratch, "runs", f"{name}-{mixer}")
    os.makedirs(folder)
    metrics, report, log = (os.path.join(folder, leaf) for leaf in ("metrics.jsonl", "memory.json", "stdout.log"))
    argv = [sys.executable, os.path.join(REPO, "bench", "measured_run.py"), report,
            *pretrain_argv(profile, corpus, profile.models[name], mixer, metrics),
            *policy_argv(mixer, os.path.join(scratch, "policy.pt"))]
    shown = bar.n

    def follow(_elapsed: float) -> None:
        bar.update(shown + train_records(metrics) - bar.n)

    child = run_process(argv, env=child_environment(), log=log, on_poll=follow, poll_s=2.0)
    bar.update(shown + profile.warmup + profile.measured - bar.n)  # a failed run's steps count as done
    run = {"model": name, "mixer": mixer, "returncode": child["returncode"], "wall_s": child["wall_s"],
           "peak_rss_mib": child["peak_rss_mib"], **read_peak_memory(report)}
    steps = step_times(metrics, profile.warmup) if child["returncode"] == 0 else []
    run["ok"] = len(steps) == profile.measured
    if run["ok"]:
        run.update(median_step_ms=statistics.median(steps), step_ms=steps)
    else:
        run["log_tail"] = tail(log)
    return run


def run_line(run: dict) -> str:
    if not run["ok"]:
        return f"[{run['model']} {run['mixer']}] FAILED (exit {run['returncode']}); the end of its log:\n{run['log_tail'][-1500:]}"
    memory = run["max_memory_allocated_mib"]
    memory = f"{memory / 1024:.1f} GiB allocated" if memory is not None else f"{run['peak_rss_mib']:.0f} MiB RSS"
    return f"[{run['model']} {run['mixer']}] median step {run['median_step_ms']:.1f} ms, peak {memory}, wall {run['wall_s']:.0f} s"


def peak_memory(run: dict) -> tuple[Optional[float], str]:
    """The run's peak memory and what it is: CUDA's allocator on a GPU, the process's RSS otherwise."""
    if run.get("max_memory_allocated_mib") is not None:
        return run["max_memory_allocated_mib"], "torch.cuda.max_memory_allocated"
    return run["peak_rss_mib"], "host peak RSS (ru_maxrss)"


def static_throughput(profile: Profile, model: Model, median_ms: float, vocab: int, device_name: str) -> dict:
    """Tokens/s of the static run and its model FLOP utilisation: (6 N + 6 L s h) per token over the
    GPU's dense bf16 peak (Kaplan et al.; N counts the logits, not the input embedding)."""
    from megatron_acodm.model import pad_vocab_size
    from overhead import sketch_flops_per_token, step_flops_per_token
    from sketch_kernels import device_peaks

    tokens_per_s = model.global_batch * profile.seq_length / (median_ms / 1e3)
    flops = step_flops_per_token(model.num_layers, model.hidden_size, pad_vocab_size(vocab), profile.seq_length)
    peaks = device_peaks(device_name)
    return {
        "tokens_per_s": tokens_per_s,
        "model_flops_per_token": flops,
        "achieved_TFLOP_per_s": tokens_per_s * flops / 1e12,
        "mfu": tokens_per_s * flops / peaks["bf16_flop_per_s"] if peaks else None,
        "sketch_flop_share": sketch_flops_per_token(model.num_layers, model.hidden_size, 4 * model.hidden_size) / flops,
    }


def summarise_model(profile: Profile, name: str, runs: list[dict], vocab: int, device_name: str) -> dict:
    """Per mixer: median step, peak memory, and both as ratios to the static run; static's throughput."""
    cells = {run["mixer"]: run for run in runs if run["model"] == name}
    static = cells["static"]
    summary = {"model": dataclasses.asdict(profile.models[name]) | {"seq_length": profile.seq_length}, "mixers": {}}
    for mixer, run in cells.items():
        if not run["ok"]:
            summary["mixers"][mixer] = {"ok": False}
            continue
        memory, source = peak_memory(run)
        cell = {"ok": True, "median_step_ms": run["median_step_ms"], "peak_memory_mib": memory, "peak_memory_source": source,
                "peak_rss_mib": run["peak_rss_mib"], "measured_steps": len(run["step_ms"])}
        if static["ok"]:
            static_memory = peak_memory(static)[0]
            cell.update(step_ratio=run["median_step_ms"] / static["median_step_ms"], peak_memory_ratio=memory / static_memory,
                        peak_memory_delta_mib=memory - static_memory)
        summary["mixers"][mixer] = cell
    if static["ok"]:
        summary["static_throughput"] = static_throughput(profile, profile.models[name], static["median_step_ms"], vocab, device_name)
    return summary


def training(profile: Profile, corpus: Corpus, scratch: str, device_name: str) -> dict:
    from common import progress, say

    runs = []
    with progress(len(profile.models) * len(MIXERS) * (profile.warmup + profile.measured), "training", "step") as bar:
        for name in profile.models:
            for mixer in MIXERS:
                runs.append(train_run(profile, corpus, name, mixer, scratch, bar))
                say(run_line(runs[-1]), sys.stdout)
    summary = {name: summarise_model(profile, name, runs, profile.vocab_size, device_name) for name in profile.models}
    cells = [cell for model in summary.values() for cell in model["mixers"].values()]
    ratios = [cell[key] for cell in cells for key in ("step_ratio", "peak_memory_ratio") if key in cell]
    failed = [f"{run['model']} {run['mixer']}" for run in runs if not run["ok"]]
    result = {
        "order": "per model: static, acodm (exports the policy on its first run), proxy",
        "warmup_steps_dropped": profile.warmup, "threads": THREADS,
        "step_time": "metrics JSONL iteration_ms (--log-interval 1): mixer.weights() to mixer.observe(), after the warm-up",
        "summary": summary, "runs": runs,
        "ok": not failed and all(math.isfinite(ratio) and ratio > 0 for ratio in ratios),
    }
    if not result["ok"]:
        failures = f"runs failed: {', '.join(failed)} (the ends of their logs are in the JSON)"
        result["error"] = failures if failed else "a ratio to static is not finite and positive"
    return result


# ---------------------------------------------------------------- the report


def host_share(report: dict) -> dict:
    """Host batch building over the static step time, per model: the loop builds each step's batch
    once the mixer has decided its weights, so this share is in every step's time."""
    batches = report["parts"].get("host_batch", {}).get("models", {})
    summary = report["parts"].get("training", {}).get("summary", {})
    shares = {}
    for name, batch in batches.items():
        static = summary.get(name, {}).get("mixers", {}).get("static", {})
        if static.get("ok"):
            shares[name] = batch["batch_ms"] / static["median_step_ms"]
    return shares


def number(value, spec: str) -> str:
    return "" if value is None else format(value, spec)


def markdown(report: dict) -> str:
    parts = report["parts"]
    lines = [f"# GPU check ({report['mode']}): {'PASSED' if report['ok'] else 'FAILED' if report['done'] else 'RUNNING'}", ""]
    facts = parts.get("versions", {})
    keys = ("device_name", "torch", "cuda", "triton", "megatron-core", "python", "layer_spec")
    lines += [", ".join(f"{key} {facts.get(key)}" for key in keys), ""]
    lines += [f"- {name}: {'ok' if part.get('ok') else 'FAILED: ' + part.get('error', 'see the JSON')} ({part['seconds']:.1f} s)"
              for name, part in parts.items()]
    lines += ["", f"Total {report['duration_s']:.0f} s (budget {BUDGET_S} s on one GPU)."]
    lines += kernel_lines(parts) + training_lines(parts, report["host_share_of_step"]) + ["", *report["notes"]]
    return "\n".join(lines) + "\n"


def table(header: list[str], rows: list[list]) -> list[str]:
    body = ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header), *body]


def kernel_lines(parts: dict) -> list[str]:
    lines = []
    correctness, speed = parts.get("kernel_correctness", {}), parts.get("kernel_speed", {})
    if "cases" in correctness:
        lines += table(["kernel case", "operation", "dtype", "rel. difference", "tolerance", "ok"], [
            [c["case"], c["operation"], c["dtype"], f"{c['relative_difference']:.1e}", f"{c['tolerance']:.0e}", c["ok"]]
            for c in correctness["cases"]
        ])
    if "results" in speed:
        lines += table(["implementation", "operation", "tokens", "median ms", "TFLOP/s", "GB/s", "of roofline"], [
            [r["implementation"], r["operation"], r["tokens"], f"{r['median_ms']:.3f}", number(r.get("achieved_TFLOP_per_s"), ".1f"),
             number(r.get("achieved_GB_per_s"), ".0f"), number(r.get("fraction_of_roofline"), ".0%")]
            for r in speed["results"]
        ])
        lines += [f"- {v['operation']} at {v['tokens']} tokens: {v['faster']} is faster, x{v['speedup']:.2f}" for v in speed["faster"]]
    return lines


def training_lines(parts: dict, host_shares: dict) -> list[str]:
    lines = []
    for name, model in parts.get("training", {}).get("summary", {}).items():
        shape = model["model"]
        size = f"{shape['num_layers']} x {shape['hidden_size']}, seq {shape['seq_length']}, global batch {shape['global_batch']}"
        lines += ["", f"**{name}** ({size})"]
        lines += table(["mixer", "median step ms", "x static", "peak memory MiB", "x static"], [
            [mixer, number(cell.get("median_step_ms"), ".1f"), number(cell.get("step_ratio"), ".3f"),
             number(cell.get("peak_memory_mib"), ".0f"), number(cell.get("peak_memory_ratio"), ".3f")]
            if cell["ok"] else [mixer, "FAILED", "", "", ""]
            for mixer, cell in model["mixers"].items()
        ])
        sources = sorted({cell["peak_memory_source"] for cell in model["mixers"].values() if cell["ok"]})
        lines += [f"\npeak memory: {', '.join(sources)}"] if sources else []
        throughput = model.get("static_throughput")
        if throughput:
            mfu = number(throughput["mfu"], ".1%") or "n/a"
            lines.append(f"\nstatic: {throughput['tokens_per_s']:,.0f} tokens/s, {throughput['achieved_TFLOP_per_s']:.1f} TFLOP/s, "
                         f"MFU {mfu}; the sketches' FLOPs: {throughput['sketch_flop_share']:.2%} of a step")
        if name in host_shares:
            batch_ms = parts["host_batch"]["models"][name]["batch_ms"]
            lines.append(f"host batch building: {batch_ms:.1f} ms, {host_shares[name]:.1%} of the static step")
    return lines


@dataclass
class Check:
    """The report of one check, saved after every part."""

    output_dir: str
    report: dict
    started: float = field(default_factory=time.perf_counter)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def save(self) -> None:
        from common import write_json, write_text

        self.report.update(duration_s=self.elapsed(), host_share_of_step=host_share(self.report))
        write_json(os.path.join(self.output_dir, REPORT), self.report)
        write_text(os.path.join(self.output_dir, SUMMARY), markdown(self.report))

    def run_part(self, name: str, function: Callable[[], dict]) -> dict:
        """Run one part, time it and save the report; a failure is recorded and the next part runs."""
        from common import say

        say(f"[{self.elapsed():6.1f} s] {name} ...")
        started = time.perf_counter()
        try:
            result = function()
        except Exception as error:  # keep going: one device session should return every part it can
            result = {"ok": False, "error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()[-4000:]}
        result["seconds"] = time.perf_counter() - started
        self.report["parts"][name] = result
        self.save()
        outcome = "ok" if result["ok"] else "FAILED: " + result.get("error", "see the JSON")
        say(f"[{self.elapsed():6.1f} s] {name}: {outcome} in {result['seconds']:.1f} s")
        return result


# ---------------------------------------------------------------- main


def parse_options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("output_dir", nargs="?", metavar="OUT_DIR", help="where gpu_check.json and gpu_check.md go")
    parser.add_argument("--wheel-dir", default=os.path.join(REPO, ".whl"), help="the carried wheels, named in the missing-wheel error")
    parser.add_argument("--cpu", action="store_true", help="the CPU rehearsal: interpreted Triton, tiny shapes")
    parser.add_argument("--list-missing", action="store_true", help="print the WHEELS not installed, one a line, and exit")
    return parser.parse_args()


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def bad_input(options: argparse.Namespace) -> Optional[str]:
    """The one-line reason the check cannot start, or None."""
    if not options.output_dir:
        return "give OUT_DIR, the folder for gpu_check.json and gpu_check.md"
    if os.path.exists(options.output_dir) and not os.path.isdir(options.output_dir):
        return f"OUT_DIR {options.output_dir} is a file; give a folder (it is created if missing)"
    missing = missing_wheels()
    if missing:
        return missing_wheels_message(missing, options.wheel_dir)
    import torch

    if not options.cpu and not torch.cuda.is_available():
        return f"no CUDA device (torch {torch.__version__}); run on a GPU machine, or pass --cpu for the CPU rehearsal on tiny shapes"
    return None


def check(options: argparse.Namespace, output_dir: str) -> dict:
    import torch

    profile, device = (CPU, "cpu") if options.cpu else (GPU, "cuda")
    torch.set_num_threads(THREADS)
    torch.backends.cuda.matmul.allow_tf32 = False  # the fp32 reference must be exact fp32, whatever the image sets
    device_name = torch.cuda.get_device_name() if device == "cuda" else platform.processor() or platform.machine()
    scratch = tempfile.mkdtemp(prefix="gpu_check-")
    notes = [*profile.notes, f"The corpus is random words and a {profile.vocab_size}-entry vocabulary (Pythia's has 50k, whose "
             "logits would add about a tenth to the 1B model's FLOPs and a third to the 160M's): enough for a speed check."]
    run = Check(output_dir, {"mode": "cpu" if options.cpu else "gpu", "done": False, "ok": False, "budget_s": BUDGET_S,
                             "notes": notes, "parts": {}})
    facts = run.run_part("versions", partial(versions, device_name))
    if device == "cuda" and facts.get("layer_spec") == "local":
        notes.append("No Transformer Engine: Megatron's local layer spec, unfused attention; the MFU is a floor.")
    run.run_part("kernel_correctness", partial(kernel_correctness, profile, device))
    run.run_part("kernel_speed", partial(kernel_speed, profile, device, device_name))
    corpus = Corpus(os.path.join(scratch, "corpus"))
    run.run_part("corpus", partial(build_corpus, profile, corpus))
    run.run_part("host_batch", partial(host_batch, profile, corpus))
    run.run_part("training", partial(training, profile, corpus, scratch, device_name))
    run.report.update(done=True, ok=all(part["ok"] for part in run.report["parts"].values()))
    if run.report["ok"]:
        shutil.rmtree(scratch, ignore_errors=True)
    else:
        run.report["notes"].append(f"the failed runs' logs, corpus and metrics are kept in {scratch}")
    run.save()
    return run.report


def main() -> int:
    options = parse_options()
    if options.cpu:  # Triton reads it when a kernel is defined, i.e. when the kernels are imported
        os.environ["TRITON_INTERPRET"] = "1"
    warnings.filterwarnings("ignore", message=".*Transformer Engine and Apex are not installed.*")
    if options.list_missing:  # whether installing could help; the check below imports for real
        print("\n".join(requirement for requirement, _ in missing_wheels(installed)))
        return 0
    problem = bad_input(options)
    if problem:
        return fail(problem)
    output_dir = os.path.abspath(options.output_dir)
    os.makedirs(output_dir, exist_ok=True)
    report = check(options, output_dir)
    failed = [name for name, part in report["parts"].items() if not part["ok"]]
    print(f"wrote {os.path.join(output_dir, SUMMARY)} and {REPORT} in {report['duration_s']:.0f} s")
    if failed:
        print(f"error: the GPU check failed in {', '.join(failed)}; see {os.path.join(output_dir, SUMMARY)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
