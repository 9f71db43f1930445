"""Part 6, training: Pythia-like 160M (12 x 768, 12 heads) and 1B (16 x 2048, 8 heads) models, bf16,
seq 2048, each `--mixer static`, `--mixer acodm` and the acodm proxy (`--acodm-policy`: the policy
the 160M acodm run exports), in that order, each a fresh `pretrain_acodm.py`; the step times are
the metrics JSONL's `iteration_ms` after a few warm-up steps, the peak CUDA memory its last training
record's `max_memory_allocated_mib`. Without Transformer Engine (a bare image) the model has
Megatron's local layer spec and unfused attention, so the utilisation is a floor."""

from __future__ import annotations

import dataclasses
import math
import os
import statistics
import sys
from typing import Optional

from .corpus import Corpus
from .profiles import SEED, THREADS, Model, Profile

MIXERS = ("static", "acodm", "proxy")


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


def peak_cuda_memory(metrics_path: str) -> Optional[float]:
    """The most CUDA memory the run's allocator handed out at once on any rank (MiB), as the trainer
    logged it; None on CPU or for a run that failed before its first record."""
    from megatron_acodm.errors import UserError
    from megatron_acodm.metrics.reader import read_metrics

    try:
        _, train, _ = read_metrics(metrics_path)
    except UserError:  # no metrics file, or an empty one
        return None
    return train[-1]["max_memory_allocated_mib"] if train else None


def train_run(profile: Profile, corpus: Corpus, name: str, mixer: str, scratch: str, bar) -> dict:
    """One fresh training process; its step times after the warm-up and its peak memory."""
    from common import REPO, run_process, tail
    from overhead import step_times

    folder = os.path.join(scratch, "runs", f"{name}-{mixer}")
    os.makedirs(folder)
    metrics, log = (os.path.join(folder, leaf) for leaf in ("metrics.jsonl", "stdout.log"))
    argv = [sys.executable, os.path.join(REPO, "pretrain_acodm.py"),
            *pretrain_argv(profile, corpus, profile.models[name], mixer, metrics),
            *policy_argv(mixer, os.path.join(scratch, "policy.pt"))]
    shown = bar.n

    def follow(_elapsed: float) -> None:
        bar.update(shown + train_records(metrics) - bar.n)

    child = run_process(argv, env=child_environment(), log=log, on_poll=follow, poll_s=2.0)
    bar.update(shown + profile.warmup + profile.measured - bar.n)  # a failed run's steps count as done
    run = {"model": name, "mixer": mixer, "returncode": child["returncode"], "wall_s": child["wall_s"],
           "peak_rss_mib": child["peak_rss_mib"], "max_memory_allocated_mib": peak_cuda_memory(metrics)}
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
