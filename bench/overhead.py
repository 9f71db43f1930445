#!/usr/bin/env python
"""Benchmark what AC-ODM costs per training step: `--mixer acodm` (and its proxy mode) against `--mixer static`.

    python bench/overhead.py [--repeats 3] [--iters 30] [--warmup 5] [--threads 1] [--quick]
        [--data-path data/demo/indexed/domains.json] [--tokenizer-model data/demo/tokenizer.model]
        [--scratch data/bench_overhead] [--output-dir bench/results] [--replot bench/results/overhead.json]

Three mixers on the same model, seed and data, at two GPT sizes (small 4 x 128, large 8 x 256; seq
128, global batch 16, micro batch 8, the demo corpus's 8 domains):
- static: the corpus-proportional weights; no sketches, no layer norms, nothing observed;
- acodm:  training mode at its defaults (the reference's method), the DDPG agent updated online from
          per-domain gradient sketches (top3 layers, k 256, two halves per domain: 2K rows), the
          layer norms and their drift from the run's start, one update a step;
- proxy:  `--acodm-policy`, a frozen actor exported by a short small-size acodm run
          (`--acodm-export-policy`); the same sketches, norms and drifts (the frozen actor reads the
          target's own state), no agent training. The same file drives both sizes.

Every measured run is a fresh `python pretrain_acodm.py` with the same OMP_NUM_THREADS (default 1:
on a few shared cores a team of 2 OpenMP threads stalls whenever another job holds a core, and step
times then swing tenfold), run in turns (repeat 1: small static, acodm, proxy, large static, acodm,
proxy; repeat 2: ...), so load from other jobs on the machine falls on all mixers alike. With one
thread the agent's own switch to one thread (`_one_thread`) costs nothing, as it would on a GPU node.

- Step time: `--log-interval 1`, so every record of the metrics JSONL is one step; its
  `iteration_ms` spans `mixer.weights()` to `mixer.observe()` (planning, data, forward, backward,
  optimizer, sketch hooks, the agent), not logging or evaluation. Iterations 1..warmup (allocator,
  first autograd graph, one-time imports) are dropped; the medians pool the rest of every repeat.
- Peak memory: each child is reaped with `os.wait4(pid)`, whose rusage is that one child's (its
  kernel high-water RSS, no sampling gap); `getrusage(RUSAGE_CHILDREN)` would instead give the
  largest child reaped so far. The peak includes the Python, torch and megatron runtime, so the
  difference in MiB says more than the ratio.
- In-process, on this process's thread count: `mixer.observe` of each mixer on synthetic signals at
  K = 8 (the agent's own cost), and the sketch work of one step (`project_and_segment_sum` on each
  hooked layer and micro-batch, `gram`, the layer norms; `torch.utils.benchmark`) at
  both sizes.
- Analytic: the sketch's share of a step's FLOPs at both sizes and at Pythia-1B, the paper's scale.

CPU and tiny models: the ratios here are NOT comparable with the paper's ~0.4 % wall-clock and ~2 %
memory on Pythia-1B on GPUs. The sketch costs about 2 T k (n + m) FLOPs per hooked layer whatever the
model's size, so its share shrinks with the model's FLOPs, tiny here.

Writes <output-dir>/overhead.json and overhead.png, prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
import warnings

from common import REPO, child_env, describe_machine, progress, run_process, save_figure, say, time_cpu, write_json
from megatron_acodm.metrics.reader import read_metrics

SIZES = {"small": {"num_layers": 4, "hidden_size": 128}, "large": {"num_layers": 8, "hidden_size": 256}}
MIXERS = ("static", "acodm", "proxy")
HEADS = 4
SEQ_LENGTH = 128
GLOBAL_BATCH = 16
MICRO_BATCH = 8
SEED = 1234
SKETCH_DIM = 256  # the --sketch-dim default
SKETCHED_LAYERS = 3  # the --sketch-layers default, top3
EXPORT_ITERS = 30
PAPER = "~0.4% wall-clock and ~2% memory overhead on Pythia-1B on GPUs (arXiv 2505.23878)"
NOT_COMPARABLE = (
    "CPU, tiny models: these ratios are NOT comparable with the paper's " + PAPER + ". The sketch costs "
    "~2 T k (n + m) FLOPs per hooked layer whatever the model, so its share of a step shrinks as the "
    "model's FLOPs grow; here they are tiny (see sketch_flop_share)."
)


# ---------------------------------------------------------------- one run, in a fresh process


def run_argv(size: str, mixer: str, iters: int, options: argparse.Namespace, metrics_path: str, policy: str | None) -> list[str]:
    """`pretrain_acodm.py`'s arguments: identical for every mixer but the mixer's own options."""
    shape = SIZES[size]
    argv = [
        sys.executable, os.path.join(REPO, "pretrain_acodm.py"),
        "--data-path", options.data_path, "--split", "969,30,1", "--data-cache-path", options.data_cache_path,
        "--tokenizer-type", "SentencePieceTokenizer", "--tokenizer-model", options.tokenizer_model,
        "--num-layers", str(shape["num_layers"]), "--hidden-size", str(shape["hidden_size"]),
        "--num-attention-heads", str(HEADS), "--seq-length", str(SEQ_LENGTH),
        "--hidden-dropout", "0", "--attention-dropout", "0",
        "--micro-batch-size", str(MICRO_BATCH), "--global-batch-size", str(GLOBAL_BATCH),
        "--train-iters", str(iters), "--lr", "1e-3", "--lr-decay-style", "constant", "--seed", str(SEED),
        # One log record a step; one held-out sample per domain at the end (not in any step's time).
        "--log-interval", "1", "--eval-iters", "0", "--metrics-path", metrics_path,
        "--mixer", "static" if mixer == "static" else "acodm",
    ]
    if mixer == "proxy":
        argv += ["--acodm-policy", policy]
    return argv


def run_child(argv: list[str], threads: int, log_path: str) -> dict:
    """Run to completion (a failure raises); wall time and the child's own peak RSS."""
    child = run_process(argv, env=child_env(threads), log=log_path, check=True)
    return {"wall_s": child["wall_s"], "peak_rss_mib": child["peak_rss_mib"]}


def step_times(metrics_path: str, warmup: int) -> list[float]:
    """`iteration_ms` of every step after the warm-up (with --log-interval 1 each record is one step)."""
    _, train, _ = read_metrics(metrics_path)
    return [float(record["iteration_ms"]) for record in train if record["iteration"] > warmup]


def measure(size: str, mixer: str, repeat: int, options: argparse.Namespace, policy: str) -> dict:
    folder = os.path.join(options.scratch, "runs", f"{size}-{mixer}-r{repeat}")
    shutil.rmtree(folder, ignore_errors=True)  # a stale metrics file would be appended to
    os.makedirs(folder)
    metrics_path = os.path.join(folder, "metrics.jsonl")
    argv = run_argv(size, mixer, options.iters, options, metrics_path, policy)
    load_before = os.getloadavg()[0]
    child = run_child(argv, options.threads, os.path.join(folder, "stdout.log"))
    steps = step_times(metrics_path, options.warmup)
    run = {
        "size": size, "mixer": mixer, "repeat": repeat, **child,
        "load_avg_1min_before": load_before,
        "median_step_ms": statistics.median(steps),
        "step_ms": steps,
    }
    say(
        f"[{size:5s} {mixer:6s} r{repeat}] median step {run['median_step_ms']:7.1f} ms over {len(steps)} steps, "
        f"peak RSS {run['peak_rss_mib']:6.0f} MiB, wall {run['wall_s']:5.1f} s, load {load_before:.2f}",
        sys.stdout,
    )
    return run


def export_policy(options: argparse.Namespace) -> dict:
    """A short small-size acodm run that writes the frozen actor every proxy run then loads."""
    folder = os.path.join(options.scratch, "export")
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    policy = os.path.join(folder, "policy.pt")
    argv = run_argv("small", "acodm", EXPORT_ITERS, options, os.path.join(folder, "metrics.jsonl"), None)
    argv += ["--acodm-export-policy", policy]
    child = run_child(argv, options.threads, os.path.join(folder, "stdout.log"))
    say(f"[export] {EXPORT_ITERS} small acodm steps wrote {policy} in {child['wall_s']:.1f} s", sys.stdout)
    return {"path": policy, "size": "small", "iters": EXPORT_ITERS, **child}


# ---------------------------------------------------------------- in-process costs


def build_mixers(names: list[str], initial_weights, total_steps: int, policy: str) -> dict:
    from megatron_acodm.arguments import parse_args
    from megatron_acodm.mixing import build_mixer

    def run(*argv: str) -> argparse.Namespace:  # the options a training run of these mixers gets
        return parse_args(["--data-path", "unused", "--tokenizer-model", "unused", "--train-iters", str(total_steps),
                           "--seed", str(SEED), *argv])

    return {
        "static": build_mixer("static", names=names, initial_weights=initial_weights, args=run("--mixer", "static")),
        "acodm": build_mixer("acodm", names=names, initial_weights=initial_weights, args=run("--mixer", "acodm")),
        "proxy": build_mixer("acodm", names=names, initial_weights=initial_weights, args=run("--mixer", "acodm", "--acodm-policy", policy)),
    }


def synthetic_signals(mixer, step: int, rng):
    """One step's signals as the trainer would give them, drawn around a loss of 8 at K domains."""
    import numpy

    from megatron_acodm.mixing import GRADIENT_GRAM, LAYER_NORMS, StepSignals

    counts = rng.multinomial(GLOBAL_BATCH, mixer.weights())
    tokens = counts * SEQ_LENGTH
    half_tokens = numpy.stack([(counts + 1) // 2, counts // 2], axis=1).reshape(-1) * SEQ_LENGTH  # rows 2k, 2k+1
    sketch = rng.standard_normal((len(half_tokens), SKETCH_DIM)) * (half_tokens > 0)[:, None]  # empty half: zero row
    gram = sketch @ sketch.T / SKETCH_DIM if GRADIENT_GRAM in mixer.needs else None
    norms = 10.0 + 0.01 * step + rng.random(len(mixer.norm_layer_depths)) if LAYER_NORMS in mixer.needs else None
    return StepSignals(
        step=step,
        domain_loss_sum=tokens * (8.0 + 0.1 * rng.standard_normal(len(counts))),
        domain_tokens=tokens.astype(numpy.float64),
        realised_counts=counts,
        followed_weights=mixer.weights(),
        half_gram=gram,
        half_tokens=half_tokens.astype(numpy.float64),
        layer_weight_norms=norms,
    )


def observe_costs(options: argparse.Namespace, policy: str) -> dict:
    """Milliseconds of `weights()` + `observe()` per step for each mixer, past AC-ODM's warm-up (in
    which its actor does not train yet)."""
    import numpy

    from megatron_acodm.data import parse_data_path

    manifest = parse_data_path([options.data_path])
    total, warm, timed = 1000, 110, options.observe_steps  # warm-up: ceil(0.1 * 1000) = 100 critic-only steps
    mixers = build_mixers(list(manifest.names), manifest.initial_weights(), total, policy)
    costs = {}
    for name, mixer in mixers.items():
        rng = numpy.random.default_rng(SEED)
        times = []
        for step in range(warm + timed):
            signals = synthetic_signals(mixer, step, rng)
            # Timed call by call, not by a benchmark timer's loop: each step's signals follow the
            # weights the previous step chose, so no call can be repeated or run ahead.
            began = time.perf_counter()
            mixer.observe(signals)
            mixer.weights()
            if step >= warm:
                times.append((time.perf_counter() - began) * 1e3)
        costs[name] = {"median_ms": statistics.median(times), "mean_ms": statistics.fmean(times), "steps": len(times)}
    return {"num_domains": len(manifest.names), "total_steps": total, "warm_steps": warm, "mixers": costs}


def sketch_cost(num_layers: int, hidden: int, repeats: int) -> dict:
    """Milliseconds of one step's sketch work at one size on this process's threads (fp32, CPU reference)."""
    import torch

    from megatron_acodm.sketch import gram, project_and_segment_sum

    generator = torch.Generator().manual_seed(SEED)
    tokens, micro_batches, layers = SEQ_LENGTH * MICRO_BATCH, GLOBAL_BATCH // MICRO_BATCH, min(SKETCHED_LAYERS, num_layers)
    x = torch.randn(tokens, 4 * hidden, generator=generator)
    delta = torch.randn(tokens, hidden, generator=generator)
    u = torch.randn(SKETCH_DIM, hidden, generator=generator).sign()
    v = torch.randn(SKETCH_DIM, 4 * hidden, generator=generator).sign()
    segments = torch.randint(0, 16, (tokens,), generator=generator)  # two halves of 8 domains
    weight = torch.randn(hidden, 4 * hidden, generator=generator)
    sketches = torch.randn(16, SKETCH_DIM, generator=generator)
    project = time_cpu(lambda: project_and_segment_sum(x, delta, u, v, segments, 16), repeats)["median_ms"]
    gram_ms = time_cpu(lambda: gram(sketches), repeats)["median_ms"]
    norm = time_cpu(lambda: weight.detach().double().pow(2).sum(), repeats)["median_ms"]
    return {
        "project_and_segment_sum_ms": project,
        "hooks_per_step_ms": project * layers * micro_batches,
        "gram_ms": gram_ms,
        "layer_norms_per_step_ms": norm * 4,  # four feature depths (0.25, 0.5, 0.75, 1.0)
        "sketched_layers": layers,
        "micro_batches": micro_batches,
    }


def sketch_costs(repeats: int) -> dict:
    return {size: sketch_cost(shape["num_layers"], shape["hidden_size"], repeats) for size, shape in SIZES.items()}


# ---------------------------------------------------------------- analysis


def step_flops_per_token(num_layers: int, hidden: int, vocab: int, seq: int) -> float:
    """Training FLOPs per token, Kaplan et al.: 6 N (non-embedding weights and the logits) + 6 L s h (attention)."""
    weights = 12 * num_layers * hidden**2 + vocab * hidden
    return 6 * weights + 6 * num_layers * seq * hidden


def sketch_flops_per_token(num_layers: int, hidden: int, ffn: int) -> float:
    """Two projections (x v^T and delta u^T) per hooked layer: 2 k (n + m)."""
    return min(SKETCHED_LAYERS, num_layers) * 2 * SKETCH_DIM * (ffn + hidden)


def sketch_flop_share() -> dict:
    rows = {size: (shape["num_layers"], shape["hidden_size"], 8064, SEQ_LENGTH) for size, shape in SIZES.items()}
    rows["pythia-1b (paper)"] = (16, 2048, 50304, 2048)
    return {
        name: sketch_flops_per_token(layers, hidden, 4 * hidden) / step_flops_per_token(layers, hidden, vocab, seq)
        for name, (layers, hidden, vocab, seq) in rows.items()
    }


def summarise(runs: list[dict]) -> dict:
    """Per size and mixer: pooled median step, per-repeat medians, median peak RSS, ratios to static."""
    summary = {}
    for size, model in SIZES.items():
        cells = {}
        for mixer in MIXERS:
            mine = [run for run in runs if run["size"] == size and run["mixer"] == mixer]
            steps = [ms for run in mine for ms in run["step_ms"]]
            quartiles = statistics.quantiles(steps, n=4)
            cells[mixer] = {
                "median_step_ms": statistics.median(steps),
                "step_ms_q1": quartiles[0],
                "step_ms_q3": quartiles[2],
                "repeat_median_step_ms": [run["median_step_ms"] for run in mine],
                "median_peak_rss_mib": statistics.median(run["peak_rss_mib"] for run in mine),
                "peak_rss_mib": [run["peak_rss_mib"] for run in mine],
                "measured_steps": len(steps),
            }
        for mixer, cell in cells.items():
            base = cells["static"]
            cell["step_ratio"] = cell["median_step_ms"] / base["median_step_ms"]
            # Paired per repeat: run r of a mixer against run r of static, next to it in time.
            cell["repeat_step_ratios"] = [a / b for a, b in zip(cell["repeat_median_step_ms"], base["repeat_median_step_ms"])]
            cell["peak_rss_ratio"] = cell["median_peak_rss_mib"] / base["median_peak_rss_mib"]
            cell["peak_rss_delta_mib"] = cell["median_peak_rss_mib"] - base["median_peak_rss_mib"]
        summary[size] = {"model": model, "mixers": cells}
    return summary


def markdown(summary: dict, observe: dict, sketch: dict, shares: dict) -> str:
    lines = [
        "| size | mixer | median step ms (IQR) | x static | per-repeat x static | peak RSS MiB | x static | delta MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for size, entry in summary.items():
        label = f"{size} ({entry['model']['num_layers']}x{entry['model']['hidden_size']})"
        for mixer, cell in entry["mixers"].items():
            repeats = ", ".join(f"{ratio:.3f}" for ratio in cell["repeat_step_ratios"])
            lines.append(
                f"| {label} | {mixer} | {cell['median_step_ms']:.1f} ({cell['step_ms_q1']:.1f}-{cell['step_ms_q3']:.1f}) | "
                f"{cell['step_ratio']:.3f} | {repeats} | {cell['median_peak_rss_mib']:.0f} | "
                f"{cell['peak_rss_ratio']:.3f} | {cell['peak_rss_delta_mib']:+.0f} |"
            )
    lines += ["", "| in-process, per step | ms |", "|---|---|"]
    for name, cost in observe["mixers"].items():
        lines.append(f"| `observe` + `weights`, {name} (K={observe['num_domains']}) | {cost['median_ms']:.3f} |")
    for size, cost in sketch.items():
        lines.append(
            f"| sketch hooks, {size} ({cost['sketched_layers']} layers x {cost['micro_batches']} micro-batches) | "
            f"{cost['hooks_per_step_ms']:.2f} |"
        )
        lines.append(f"| gram + 4 layer norms, {size} | {cost['gram_ms'] + cost['layer_norms_per_step_ms']:.3f} |")
    lines += ["", "| sketch share of a step's FLOPs | |", "|---|---|"]
    lines += [f"| {name} | {share:.2%} |" for name, share in shares.items()]
    lines += ["", NOT_COMPARABLE]
    return "\n".join(lines)


# ---------------------------------------------------------------- plot and report


def plot(summary: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    width = 0.26
    colors = {"static": "#7f7f7f", "acodm": "#d62728", "proxy": "#1f77b4"}
    panels = (("median_step_ms", "step_ratio", "median step time (ms)"), ("median_peak_rss_mib", "peak_rss_ratio", "peak RSS (MiB)"))
    for axis, (value_key, ratio_key, title) in zip(axes, panels):
        for offset, mixer in enumerate(MIXERS):
            positions = [index + (offset - 1) * width for index in range(len(summary))]
            cells = [entry["mixers"][mixer] for entry in summary.values()]
            # Whiskers: the range over repeats (per-repeat median step, or each run's peak RSS).
            spreads = [cell["repeat_median_step_ms" if value_key == "median_step_ms" else "peak_rss_mib"] for cell in cells]
            heights = [cell[value_key] for cell in cells]
            whiskers = [[max(0.0, h - min(s)) for h, s in zip(heights, spreads)], [max(0.0, max(s) - h) for h, s in zip(heights, spreads)]]
            bars = axis.bar(positions, heights, width, yerr=whiskers, capsize=3, label=mixer, color=colors[mixer])
            for bar, cell, spread in zip(bars, cells, spreads):
                top = max(bar.get_height(), max(spread))
                axis.annotate(f"x{cell[ratio_key]:.3f}", (bar.get_x() + bar.get_width() / 2, top),
                              ha="center", va="bottom", fontsize=8, xytext=(0, 2), textcoords="offset points")
        axis.set_xticks(range(len(summary)))
        axis.set_xticklabels([f"{size}\n{e['model']['num_layers']} layers x {e['model']['hidden_size']}" for size, e in summary.items()])
        axis.set_title(title)
        axis.margins(y=0.12)
    axes[0].legend()
    figure.suptitle("AC-ODM overhead vs --mixer static on CPU (ratios on bars); tiny models: not comparable with the paper's GPU figures", fontsize=9)
    figure.tight_layout()
    save_figure(figure, path, dpi=120)
    plt.close(figure)


def parse_options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each mixer and size, interleaved")
    parser.add_argument("--iters", type=int, default=30, help="training steps per run")
    parser.add_argument("--warmup", type=int, default=5, help="first steps of each run left out of the timings")
    # One thread: on shared cores an OpenMP team of 2 stalls whenever another job holds a core
    # (measured here: a 180 ms step became 2-5 s under load, a 1-thread step stayed at 310-330 ms).
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of every run and of this process")
    parser.add_argument("--observe-steps", type=int, default=200, help="steps of the in-process observe timing")
    parser.add_argument("--quick", action="store_true", help="one repeat of 10 steps: a smoke test, not a measurement")
    parser.add_argument("--data-path", default="data/demo/indexed/domains.json")
    parser.add_argument("--data-cache-path", default="data/demo/cache")
    parser.add_argument("--tokenizer-model", default="data/demo/tokenizer.model")
    parser.add_argument("--scratch", default="data/bench_overhead")
    parser.add_argument("--output-dir", default=None, help="default bench/results; <scratch>/quick with --quick")
    parser.add_argument("--replot", metavar="JSON", default=None, help="only redraw overhead.png from a written overhead.json")
    options = parser.parse_args()
    if options.quick:
        options.repeats, options.iters, options.warmup, options.observe_steps = 1, 10, 3, 50
    if options.output_dir is None:  # a smoke test must not overwrite the measured results
        options.output_dir = os.path.join(options.scratch, "quick") if options.quick else os.path.join(REPO, "bench", "results")
    if options.iters <= options.warmup:
        parser.error("--iters must exceed --warmup")
    for name in ("data_path", "data_cache_path", "tokenizer_model", "scratch", "output_dir"):
        setattr(options, name, os.path.abspath(getattr(options, name)))
    return options


def main() -> None:
    options = parse_options()
    if options.replot:
        with open(options.replot) as stream:
            plot(json.load(stream)["summary"], os.path.join(os.path.dirname(os.path.abspath(options.replot)), "overhead.png"))
        return
    os.environ["OMP_NUM_THREADS"] = str(options.threads)  # before torch is imported here
    warnings.filterwarnings("ignore", message=".*Transformer Engine and Apex are not installed.*")
    if not os.path.isfile(options.data_path):
        sys.exit(f"error: {options.data_path} missing; build it with examples/cpu_quickstart.sh steps 1-2")
    os.makedirs(options.scratch, exist_ok=True)
    began, load_start = time.time(), os.getloadavg()
    with progress(1 + options.repeats * len(SIZES) * len(MIXERS), "overhead", "run") as bar:
        policy = export_policy(options)
        bar.update()
        runs = []
        for repeat in range(options.repeats):
            for size in SIZES:
                for mixer in MIXERS:
                    runs.append(measure(size, mixer, repeat, options, policy["path"]))
                    bar.update()
    import torch

    torch.set_num_threads(options.threads)
    observe = observe_costs(options, policy["path"])
    sketch = sketch_costs(repeats=20)
    summary = summarise(runs)
    shares = sketch_flop_share()
    report = {
        "note": NOT_COMPARABLE,
        "config": {
            "sizes": SIZES, "heads": HEADS, "seq_length": SEQ_LENGTH, "global_batch_size": GLOBAL_BATCH,
            "micro_batch_size": MICRO_BATCH, "seed": SEED, "iters": options.iters, "warmup_dropped": options.warmup,
            "repeats": options.repeats, "order": "repeat > size > mixer (static, acodm, proxy)",
            "sketch_dim": SKETCH_DIM, "sketch_layers": f"top{SKETCHED_LAYERS}", "quick": options.quick,
            "data_path": os.path.relpath(options.data_path, REPO),
            "step_time": "metrics JSONL iteration_ms, --log-interval 1: mixer.weights() to mixer.observe(), iterations > warmup",
            "peak_memory": "ru_maxrss of each child from os.wait4(pid): that process's kernel high-water RSS",
        },
        "machine": describe_machine(
            ("cpu_count", "cpu_model", "omp_num_threads", "platform", "python", "torch", "megatron-core", "numpy",
             "megatron-acodm"),
            omp_num_threads=options.threads,
        ),
        "load_avg_1min": {"start": load_start[0], "end": os.getloadavg()[0]},
        "duration_s": time.time() - began,
        "policy_export": policy,
        "summary": summary,
        "observe_ms": observe,
        "sketch_ms": sketch,
        "sketch_flop_share": shares,
        "runs": runs,
    }
    os.makedirs(options.output_dir, exist_ok=True)
    write_json(os.path.join(options.output_dir, "overhead.json"), report)
    plot(summary, os.path.join(options.output_dir, "overhead.png"))
    print()
    print(markdown(summary, observe, sketch, shares))
    print(f"\nwrote {options.output_dir}/overhead.json and overhead.png in {report['duration_s']:.0f} s")


if __name__ == "__main__":
    main()
