#!/usr/bin/env python
"""Mixing quality: does online mixing beat static blends on real text? Side by side, several seeds.

    python bench/mixing_quality.py [--quick] [--corpus demo|noisy] [--data-path domains.json --tokenizer-model M]
        [--target-data-path T] [--seeds 1,2,3] [--steps N] [--mixers uniform,temperature,odm,ado,aioli,acodm,acodm_proxy]
        [--work-dir data/mixing_quality] [--output-dir bench/results] [--fresh]

Trains the same small GPT on CPU under each mixer, with identical seeds, data, steps and optimiser
settings, one `python pretrain_acodm.py` subprocess at a time:

- `uniform` (the static reference), `temperature` (T = 2 on corpus tokens), the published online
  baselines `odm`, `ado` and `aioli` (each at its defaults; Aioli's sweeps of perturbed mixtures are
  steps of its run; `--quick` shrinks its schedule to one round with a one-step-per-domain sweep),
  `acodm` (non-proxy, the agent learns online), and `acodm_proxy`: a smaller proxy model trains
  AC-ODM with `--acodm-export-policy`, and its frozen actor drives the target (`--acodm-policy`); the proxy's
  steps are part of that mixer's cost and reported beside it. `static` (tokens-proportional) can be
  added with `--mixers`.
- `--seed` changes the model's initialisation, the data order and the held-out samples; each seed
  runs every mixer, so differences are also reported paired by seed.

Reports, per mixer, the mean and spread over seeds of: the steps needed to reach uniform's final
mean validation loss (uniform mean over domains and corpus-token-weighted mean; linear
interpolation between evaluations; the ratio to uniform's steps), the final per-domain and mean
validation losses, the realised mixture over the run, and the per-step time and peak RSS (each
subprocess's own `ru_maxrss`) against uniform. Writes `<output-dir>/mixing_quality.json` (with every
per-seed curve), `mixing_quality.md` (also printed), `mixing_quality_curves.png` and
`mixing_quality_weights.png`.

Without `--data-path` it uses the demo corpus, building it first (`tools/build_demo_corpus.py`,
`tools/preprocess_domains.py`) when `data/demo/indexed/domains.json` is missing. Runs go to
`<work-dir>/<quick|full>-<hash of the settings>/<mixer>-seed<S>/`; a run whose metrics are complete
is not run again (`--fresh` reruns everything). `--target-data-path` (a held-out target set for a
task-aligned mixer) is recorded but no mixer here reads it yet.

`--corpus noisy` asks whether a mixer learns to avoid data that cannot be learnt: the demo corpus
plus one domain, `noise`, of uniformly random ordinary token ids (a fixed seed; documents of the
demo's mean length, each ending in EOD) holding 40% of all corpus tokens. Its `.bin/.idx` pair and
a `domains.json` listing the demo's domains and `noise` are written once to `<work-dir>/noisy-corpus/`
(again only when the noise's recipe changes). Every run gets `--mixing-objective <the demo's
domains>` (the mixers that read gradients then lower the real domains' loss). Every mean,
steps-to-reach and ratio is over the real domains only (noise's own loss is shown beside them); the references are `uniform` and `static` (tokens-proportional, the
blend a user would pick: it gives the noise its 40%); the default mixers are uniform, static, odm,
ado, aioli, acodm and acodm_proxy; the mixture table shows the noise's share first. Writes
`mixing_quality_noisy.{json,md}`, `mixing_quality_noisy_curves.png` and
`mixing_quality_noisy_weights.png`.

This file runs the comparison; `mixing_quality_analysis.py` turns the runs' metrics into figures,
`mixing_quality_report.py` writes the markdown page and `mixing_quality_plots.py` the plots.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator, Optional, Sequence

import numpy
from megatron.core.datasets.indexed_dataset import DType

from common import REPO, child_env, describe_machine, progress, run_process, say, tail, write_json, write_text
from megatron_acodm.demo_corpus.tokenizer_training import SPECIAL_IDS
from megatron_acodm.indexing import DomainInput, EncodedBatch, Job, write_domain
from megatron_acodm.data.indexed import check_indexed_files
from megatron_acodm.data.manifest import MANIFEST_NAME, PREFIX_SUFFIX, Domain, Manifest, load_manifest
from megatron_acodm.data.tokenizers import Tokenizer, file_sha256
from megatron_acodm.errors import UserError
from megatron_acodm.mixing import MIXERS
from megatron_acodm.metrics import validation_means
from mixing_quality_analysis import REFERENCE, REFERENCES, analyse, clock, eval_interval, log_interval, parameter_count
from mixing_quality_plots import plot_curves, plot_weights
from mixing_quality_report import markdown
from megatron_acodm.metrics.reader import read_metrics

DEMO_DIR = "data/demo"
DEMO_DATA = f"{DEMO_DIR}/indexed/domains.json"
DEMO_TOKENIZER = f"{DEMO_DIR}/tokenizer.model"
ALL_MIXERS = ("static", "uniform", "temperature", "odm", "ado", "aioli", "acodm", "acodm_proxy")
DEFAULT_MIXERS = {"demo": ("uniform", "temperature", "odm", "ado", "aioli", "acodm", "acodm_proxy"),
                  "noisy": ("uniform", "static", "odm", "ado", "aioli", "acodm", "acodm_proxy")}
OUTPUT_STEMS = {"demo": "mixing_quality", "noisy": "mixing_quality_noisy"}

# The noisy corpus: the demo's domains plus NOISE, uniformly random ordinary ids, NOISE_SHARE of all tokens.
NOISE = "noise"
NOISE_SHARE = 0.4
NOISE_SEED = 20240917
NOISE_BATCH = 256  # documents generated at a time: bounds the memory the generation holds
NOISE_FORMAT = 1  # part of the noise's fingerprint: bump when the same recipe writes other ids

# (full, quick) defaults
PRESETS = {
    "full": dict(steps=450, seeds="1,2,3", layers=4, hidden=128, heads=4, seq_length=128, global_batch=16,
                 micro_batch=8, proxy_layers=2, proxy_hidden=64, evaluations=10, eval_iters=8, log_points=45),
    "quick": dict(steps=40, seeds="1,2", layers=2, hidden=64, heads=4, seq_length=64, global_batch=16,
                  micro_batch=8, proxy_layers=1, proxy_hidden=32, evaluations=4, eval_iters=2, log_points=20),
}


# ------------------------------------------------------------------------------------------ setup


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--quick", action="store_true", help="a minutes-long smoke run: tiny model, 2 seeds, 40 steps")
    add("--corpus", choices=("demo", "noisy"), default="demo",
        help=f"demo: the demo corpus (or --data-path); noisy: the demo corpus plus a domain of random ids "
             f"holding {NOISE_SHARE * 100:.0f}%% of the tokens, evaluated on the real domains only")
    add("--data-path", default=None, help=f"a preprocessed corpus' domains.json (default {DEMO_DATA}, built when missing)")
    add("--tokenizer-model", default=None, help=f"the corpus' tokenizer (default {DEMO_TOKENIZER} with the demo corpus)")
    add("--tokenizer-type", default="SentencePieceTokenizer")
    add("--target-data-path", default=None,
        help="held-out target set for a task-aligned mixer: recorded in the results, read by no mixer yet")
    add("--mixers", default=None,
        help=f"comma-separated, from {','.join(ALL_MIXERS)} (demo: {','.join(DEFAULT_MIXERS['demo'])}; "
             f"noisy: {','.join(DEFAULT_MIXERS['noisy'])})")
    add("--seeds", default=None, help="comma-separated --seed values (full: 1,2,3; quick: 1,2)")
    add("--steps", type=int, default=None, help="training steps of every run (full: 450; quick: 40)")
    add("--layers", type=int, default=None)
    add("--hidden", type=int, default=None)
    add("--heads", type=int, default=None)
    add("--seq-length", type=int, default=None)
    add("--global-batch", type=int, default=None)
    add("--micro-batch", type=int, default=None)
    add("--proxy-layers", type=int, default=None, help="the AC-ODM proxy model's layers")
    add("--proxy-hidden", type=int, default=None, help="the AC-ODM proxy model's hidden size")
    add("--evaluations", type=int, default=None, help="validation points per run (every steps/N)")
    add("--eval-iters", type=int, default=None, help="global batches of held-out samples per validation")
    add("--log-points", type=int, default=None, help="train records per run (the mixture's time resolution)")
    add("--lr", type=float, default=1e-3)
    add("--min-lr", type=float, default=1e-4)
    add("--temperature", type=float, default=2.0, help="the temperature mixer's T")
    add("--threads", type=int, default=1,
        help="OMP_NUM_THREADS of each run (1 by default: the cores are shared, and a second thread "
             "that waits on a busy core slows a step by 10x)")
    add("--work-dir", default="data/mixing_quality", help="scratch folder of the runs")
    add("--output-dir", default="bench/results")
    add("--fresh", action="store_true", help="rerun every run, even complete ones")
    args = parser.parse_args(argv)
    preset = PRESETS["quick" if args.quick else "full"]
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.seeds = [int(seed) for seed in str(args.seeds).split(",") if seed.strip()]
    mixers = args.mixers or ",".join(DEFAULT_MIXERS[args.corpus])
    args.mixers = [mixer.strip() for mixer in mixers.split(",") if mixer.strip()]
    args.references = list(REFERENCES[args.corpus])
    unknown = [mixer for mixer in args.mixers if mixer not in ALL_MIXERS]
    if unknown:
        parser.error(f"unknown mixers {unknown}; choose from {', '.join(ALL_MIXERS)}")
    missing = [reference for reference in args.references if reference not in args.mixers]
    if missing:
        parser.error(f"--mixers must include {' and '.join(args.references)}: the references of every ratio "
                     f"(missing {', '.join(missing)})")
    if args.corpus == "noisy" and args.data_path is not None:
        parser.error("--corpus noisy adds its noise to the demo corpus; drop --data-path")
    if not args.seeds:
        parser.error("--seeds needs at least one seed")
    if args.steps < args.evaluations or args.steps < 2:
        parser.error("--steps must be at least --evaluations and 2")
    return args


def run_tool(arguments: list[str]) -> None:
    say("$ " + " ".join(arguments))
    run_process([sys.executable, *arguments], check=True)


def ensure_corpus(args: argparse.Namespace) -> None:
    """The runs' corpus in `args.data_path`, its real domains (every mean is over them) in
    `args.evaluated`, and the `--mixing-objective` every run gets in `args.mixing_objective` (None: none)."""
    if args.data_path is None:
        ensure_demo_corpus(args)
    elif args.tokenizer_model is None:
        sys.exit("error: --data-path needs --tokenizer-model (the tokenizer the corpus was made with)")
    args.evaluated = load_manifest(args.data_path).names
    args.mixing_objective = None
    if args.corpus == "noisy":
        args.data_path = ensure_noisy_corpus(args)
        args.mixing_objective = args.evaluated  # the gradient mixers lower the real domains' loss


def ensure_demo_corpus(args: argparse.Namespace) -> None:
    """The demo corpus, built and indexed when it is missing."""
    args.data_path = os.path.join(REPO, DEMO_DATA)
    args.tokenizer_model = args.tokenizer_model or os.path.join(REPO, DEMO_TOKENIZER)
    if os.path.exists(args.data_path):
        return
    print(f"{DEMO_DATA} is missing: building the demo corpus", file=sys.stderr, flush=True)
    if not os.path.exists(os.path.join(REPO, DEMO_TOKENIZER)) or not os.path.isdir(os.path.join(REPO, DEMO_DIR, "jsonl")):
        run_tool(["tools/build_demo_corpus.py", "--output-dir", DEMO_DIR])
    run_tool(["tools/preprocess_domains.py", "--input", f"{DEMO_DIR}/jsonl", "--output-dir", f"{DEMO_DIR}/indexed",
               "--tokenizer-type", "SentencePieceTokenizer", "--tokenizer-model", DEMO_TOKENIZER,
               "--workers", str(os.cpu_count() or 1), "--append-eod"])


# ------------------------------------------------------------------------------------------ the noisy corpus


def noise_documents(documents: int, length: int, vocab_size: int, eod: int) -> Iterator[EncodedBatch]:
    """`documents` documents of `length` ids each: `length - 1` drawn uniformly from the ordinary ids
    (not the tokenizer's special ones), then EOD, as the demo's documents end; the same every time."""
    ordinary = numpy.setdiff1d(numpy.arange(vocab_size), list(SPECIAL_IDS.values()))
    generator = numpy.random.default_rng(NOISE_SEED)
    dtype = DType.optimal_dtype(vocab_size)
    for start in range(0, documents, NOISE_BATCH):
        count = min(NOISE_BATCH, documents - start)
        ids = ordinary[generator.integers(0, ordinary.size, size=(count, length - 1))]
        tokens = numpy.concatenate([ids, numpy.full((count, 1), eod)], axis=1).astype(dtype).ravel()
        yield EncodedBatch(tokens, numpy.full(count, length, dtype=numpy.int64), text_bytes=0)


def _cached_noise(manifest_path: str, fingerprint: str) -> Optional[Domain]:
    """The noise domain `manifest_path` lists, when this recipe wrote it and its files are whole."""
    try:
        noise = next((domain for domain in load_manifest(manifest_path).domains if domain.name == NOISE), None)
        if noise is None or noise.inputs_sha256 != fingerprint:
            return None
        check_indexed_files(noise.prefix)
    except UserError:  # no manifest yet, a broken one, or broken files: written again
        return None
    return noise


def ensure_noisy_corpus(args: argparse.Namespace) -> str:
    """The demo corpus plus the noise domain, under `<work-dir>/noisy-corpus/`; returns its manifest.

    The noise is written when its recipe (size, seed, tokenizer) changes; the manifest, which only
    points at the demo's files, every time, so it follows the demo corpus wherever it is."""
    base = load_manifest(args.data_path)
    if NOISE in base.names:
        sys.exit(f"error: {args.data_path} already has a domain named {NOISE!r}; rename it to add the noise domain")
    folder = os.path.abspath(os.path.join(args.work_dir, "noisy-corpus"))
    manifest_path = os.path.join(folder, MANIFEST_NAME)
    tokenizer = Tokenizer(args.tokenizer_type, args.tokenizer_model)
    base_tokens = sum(domain.tokens for domain in base.domains)
    length = round(base_tokens / sum(domain.documents for domain in base.domains))  # the demo's mean document
    documents = round(base_tokens * NOISE_SHARE / (1 - NOISE_SHARE) / length)
    vocab_size = base.tokenizer["vocab_size"]
    recipe = {"format": NOISE_FORMAT, "seed": NOISE_SEED, "documents": documents, "length": length,
              "special_ids": sorted(SPECIAL_IDS.values()), "eod": tokenizer.eod, "tokenizer": base.tokenizer}
    fingerprint = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()
    noise = _cached_noise(manifest_path, fingerprint)
    if noise is None:
        say(f"writing the noise domain: {documents:,} documents of {length} random ids in {folder}")
        job = Job(DomainInput(NOISE, "generated noise", ()), "text", NOISE, os.path.join(folder, f"{NOISE}{PREFIX_SUFFIX}"))
        os.makedirs(folder, exist_ok=True)
        # No input files to read: the encoder ignores its (empty) line batches and yields the noise.
        noise = write_domain(job, tokenizer, lambda _: noise_documents(documents, length, vocab_size, tokenizer.eod),
                             fingerprint, log=say)
    Manifest(domains=[*base.domains, noise], tokenizer=base.tokenizer).save(manifest_path)
    return manifest_path


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """Everything that changes a run's numbers; its hash names the folder of the runs (the demo's
    settings leave the corpus choice out, so runs on the demo corpus keep their folder)."""
    return {
        "data_path": os.path.abspath(args.data_path),
        "data_sha256": file_sha256(args.data_path),
        "tokenizer_model": os.path.abspath(args.tokenizer_model),
        "steps": args.steps, "layers": args.layers, "hidden": args.hidden, "heads": args.heads,
        "seq_length": args.seq_length, "global_batch": args.global_batch, "micro_batch": args.micro_batch,
        "proxy_layers": args.proxy_layers, "proxy_hidden": args.proxy_hidden,
        "eval_interval": eval_interval(args), "eval_iters": args.eval_iters, "log_interval": log_interval(args),
        "lr": args.lr, "min_lr": args.min_lr, "temperature": args.temperature, "threads": args.threads,
        **({} if args.corpus == "demo" else {"corpus": args.corpus, "mixing_objective": args.mixing_objective}),
    }


# ------------------------------------------------------------------------------------------ runs


class Run:
    """One training subprocess: a mixer (or the AC-ODM proxy) at one seed."""

    def __init__(self, root: str, mixer: str, seed: int, args: argparse.Namespace, label: Optional[str] = None):
        """`label` (default: the mixer) names the run's folder, for a mixer run in several settings."""
        self.mixer, self.seed = mixer, seed
        self.is_proxy = mixer == "proxy"
        self.name = f"{label or mixer}-seed{seed}"
        self.folder = os.path.join(root, self.name)
        self.metrics = os.path.join(self.folder, "metrics.jsonl")
        self.result_path = os.path.join(self.folder, "result.json")
        self.policy = os.path.join(root, f"proxy-seed{seed}", "policy.pt")
        self.args = args
        self.steps = args.steps

    def arguments(self) -> list[str]:
        return self.training_arguments() + self.mixer_arguments()

    def training_arguments(self) -> list[str]:
        """What every run of the comparison shares: data, model, schedule, logging."""
        args = self.args
        layers, hidden = (args.proxy_layers, args.proxy_hidden) if self.is_proxy else (args.layers, args.hidden)
        arguments = [
            "--data-path", os.path.abspath(args.data_path), "--split", "969,30,1",
            "--data-cache-path", os.path.abspath(os.path.join(args.work_dir, "cache")),
            "--tokenizer-type", args.tokenizer_type, "--tokenizer-model", os.path.abspath(args.tokenizer_model),
            "--num-layers", str(layers), "--hidden-size", str(hidden), "--num-attention-heads", str(args.heads),
            "--seq-length", str(args.seq_length), "--hidden-dropout", "0", "--attention-dropout", "0",
            "--micro-batch-size", str(args.micro_batch), "--global-batch-size", str(args.global_batch),
            "--train-iters", str(self.steps), "--lr", str(args.lr), "--min-lr", str(args.min_lr),
            "--lr-warmup-iters", str(max(1, self.steps // 10)), "--lr-decay-style", "cosine",
            "--weight-decay", "0.1", "--clip-grad", "1.0", "--seed", str(self.seed),
            "--log-interval", str(log_interval(args)), "--eval-interval", str(eval_interval(args)),
            "--eval-iters", str(args.eval_iters), "--metrics-path", os.path.abspath(self.metrics),
        ]
        return arguments

    def mixer_arguments(self) -> list[str]:
        """The mixer and its options."""
        args = self.args
        arguments = []
        if self.mixer == "temperature":
            arguments += ["--mixer", "temperature", "--mixing-temperature", str(args.temperature)]
        elif self.is_proxy:
            arguments += ["--mixer", "acodm", "--acodm-export-policy", os.path.abspath(self.policy)]
        elif self.mixer == "acodm_proxy":
            arguments += ["--mixer", "acodm", "--acodm-policy", os.path.abspath(self.policy)]
        elif self.mixer == "aioli" and args.quick:  # 40 steps hold no default round (5 of them, 2 sweeps each)
            arguments += ["--mixer", "aioli", "--aioli-rounds", "1", "--aioli-sweeps", "1", "--aioli-segment-steps", "1"]
        else:
            arguments += ["--mixer", self.mixer]
        # Only the mixers that read an objective are given one (the trainer refuses it to the others).
        if args.mixing_objective and "mixing_objective" in MIXERS[arguments[1]].reads:
            arguments += ["--mixing-objective", ",".join(args.mixing_objective)]
        return arguments

    def command(self) -> list[str]:
        return [sys.executable, os.path.join(REPO, "pretrain_acodm.py"), *self.arguments()]

    def complete(self) -> bool:
        """Its result file is there and its metrics reach the last step (and the policy, for a proxy)."""
        if not os.path.exists(self.result_path):
            return False
        try:
            _, train, valid = read_metrics(self.metrics)
        except UserError:
            return False
        if not train or not valid or train[-1]["iteration"] != self.steps or valid[-1]["iteration"] != self.steps:
            return False
        return not self.is_proxy or os.path.exists(self.policy)

    def result(self) -> dict[str, Any]:
        with open(self.result_path, encoding="utf-8") as stream:
            return json.load(stream)

    def progress(self) -> int:
        """The last train iteration logged so far (0 when none)."""
        try:
            _, train, _ = read_metrics(self.metrics)
        except UserError:
            return 0
        return train[-1]["iteration"] if train else 0

    def curves(self) -> tuple[list[str], dict[str, Any]]:
        """A finished run's domain names and curves: validation per evaluation, mixture and step time per log record.

        The validation means are the trainer's own (`validation_means`) taken over the real domains
        (`args.evaluated`): over every domain, as the trainer logs them, unless the corpus has noise."""
        headers, train, valid = read_metrics(self.metrics)
        names = headers[-1]["domains"]
        corpus_tokens = [valid[-1]["domains"][name]["corpus_tokens"] for name in names] if valid else []
        step_ms = [record["iteration_ms"] for record in train[1:]] or [record["iteration_ms"] for record in train]
        means = [validation_means([record["domains"][name]["loss"] for name in self.args.evaluated],
                                  [record["domains"][name]["corpus_tokens"] for name in self.args.evaluated])
                 for record in valid]
        return names, {
            "valid": {
                "iteration": [record["iteration"] for record in valid],
                "lm_loss": [token_weighted for token_weighted, _ in means],
                "lm_loss_uniform": [uniform for _, uniform in means],
                "domain_loss": {name: [record["domains"][name]["loss"] for record in valid] for name in names},
                # the held-out loss of each target set, for runs given --target-data-path
                "target_loss": {name: [record["targets"][name]["loss"] for record in valid] for name in (valid[-1].get("targets", {}) if valid else {})},
            },
            "train": {
                "iteration": [record["iteration"] for record in train],
                "lm_loss": [record["lm_loss"] for record in train],
                "iteration_ms": [record["iteration_ms"] for record in train],
                "weight": {name: [record["domains"][name]["weight"] for record in train] for name in names},
                "share": {name: [record["domains"][name]["share"] for record in train] for name in names},
            },
            "corpus_tokens": corpus_tokens,
            # the first log interval holds the first steps' one-off costs; the median resists the shared cores' bursts
            "median_step_ms": statistics.median(step_ms) if step_ms else None,
        }

    def execute(self, on_poll) -> dict[str, Any]:
        """Run it to the end (from scratch); returns its result: wall time, ru_maxrss, exit status."""
        if os.path.isdir(self.folder):
            for leftover in ("metrics.jsonl", "result.json", "policy.pt"):
                if os.path.exists(os.path.join(self.folder, leftover)):
                    os.remove(os.path.join(self.folder, leftover))
        os.makedirs(self.folder, exist_ok=True)
        error_log = os.path.join(self.folder, "stderr.log")
        child = run_process(self.command(), cwd=self.folder, env=child_env(self.args.threads),
                            log=os.path.join(self.folder, "stdout.log"), error_log=error_log, on_poll=on_poll)
        result = {
            "name": self.name, "mixer": self.mixer, "seed": self.seed, **child,
            "command": ["python", "pretrain_acodm.py", *self.arguments()],
        }
        if child["returncode"] != 0:
            result["stderr_tail"] = tail(error_log)
            return result
        write_json(self.result_path, result)
        return result


def execute_runs(runs: list[Run], fresh: bool, description: str = "mixing quality", jobs: int = 1) -> dict[str, dict[str, Any]]:
    """The runs in order (seed by seed, so partial results cover every mixer), with a progress bar
    over the steps still to run; a complete run is not run again unless `fresh`. With `jobs` > 1,
    each of `jobs` threads takes every jobs-th run (for runs that do not depend on one another,
    i.e. no proxy and its target; each child does its own work)."""
    if jobs > 1:
        with ThreadPoolExecutor(jobs) as pool:
            shards = pool.map(lambda shard: execute_runs(shard, fresh, description), [runs[job::jobs] for job in range(jobs)])
            return {name: result for shard in shards for name, result in shard.items()}
    proxies_to_run = {run.seed for run in runs if run.is_proxy and (fresh or not run.complete())}

    def to_run(run: Run) -> bool:  # a proxy trained now has a new policy: its target runs again
        return fresh or not run.complete() or (run.mixer == "acodm_proxy" and run.seed in proxies_to_run)

    pending = {run.name for run in runs if to_run(run)}
    results: dict[str, dict[str, Any]] = {}
    with progress(sum(run.steps for run in runs if run.name in pending), description, "step") as bar:
        for index, run in enumerate(runs):
            label = f"[{index + 1}/{len(runs)}] {run.name}"
            if run.mixer == "acodm_proxy" and results.get(f"proxy-seed{run.seed}", {}).get("returncode", 0) != 0:
                say(f"{label}: skipped, its proxy run failed")
                results[run.name] = {"name": run.name, "mixer": run.mixer, "seed": run.seed, "returncode": None,
                                     "error": "the proxy run failed"}
                if run.name in pending:
                    bar.total -= run.steps
                    bar.refresh()
                continue
            if run.name not in pending:
                results[run.name] = run.result()
                say(f"{label}: complete already, skipped ({run.folder})")
                continue
            say(f"{label}: starting")
            bar.set_postfix_str(run.name)
            done = 0

            def on_poll(_: float) -> None:
                nonlocal done
                step = run.progress()
                if step > done:
                    bar.update(step - done)
                    done = step

            result = run.execute(on_poll)
            bar.update(run.steps - done)
            results[run.name] = result
            if result["returncode"] != 0:
                say(f"{label}: FAILED (exit {result['returncode']}), see {run.folder}/stderr.log:\n"
                    f"{result.get('stderr_tail', '')[-1500:]}")
                continue
            say(f"{label}: done in {clock(result['wall_s'])} ({1000 * result['wall_s'] / run.steps:.0f} ms/step "
                f"with start-up), peak RSS {result['peak_rss_mib']:.0f} MiB")
    return results


# ------------------------------------------------------------------------------------------ main


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    try:
        ensure_corpus(args)
    except UserError as error:  # a corpus or tokenizer the trainer would refuse: one line, as it says it
        sys.exit(f"error: {error}")
    mode = "quick" if args.quick else "full"
    config = settings(args)
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:10]
    root = os.path.join(args.work_dir, f"{mode}-{digest}")
    os.makedirs(root, exist_ok=True)
    write_json(os.path.join(root, "settings.json"), config)
    runs: list[Run] = []
    for seed in args.seeds:
        if "acodm_proxy" in args.mixers:
            runs.append(Run(root, "proxy", seed, args))
        runs += [Run(root, mixer, seed, args) for mixer in args.mixers]
    say(f"mixing quality ({mode}): {len(runs)} runs of {args.steps} steps in {root}")
    started = time.perf_counter()
    results = execute_runs(runs, args.fresh)
    wall = time.perf_counter() - started
    run_wall = sum(result.get("wall_s", 0.0) for result in results.values())

    curves: dict[str, dict] = {}
    names: list[str] = []
    for run in runs:
        if results[run.name].get("returncode") == 0:
            run_names, curves[run.name] = run.curves()
            names = names or run_names
    analysis = analyse(args, results, curves, names)
    os.makedirs(args.output_dir, exist_ok=True)
    report = markdown(args, analysis, run_wall, mode)
    document = {
        "benchmark": "mixing_quality",
        "mode": mode,
        "corpus": args.corpus,
        "settings": config,
        "run_folder": os.path.relpath(root, REPO),
        "target_data_path": args.target_data_path,
        "target_data_path_note": "recorded only: no mixer in this comparison reads a target set yet",
        "mixers": args.mixers,
        "seeds": args.seeds,
        "reference": REFERENCE,
        "references": args.references,
        "parameters": {"target": parameter_count(args.layers, args.hidden, args),
                       "proxy": parameter_count(args.proxy_layers, args.proxy_hidden, args)},
        "wall_s": {"this_invocation": wall, "sum_of_runs": run_wall},
        "environment": describe_machine(("python", "torch", "cpus", "threads_per_run", "machine"), threads_per_run=args.threads),
        **analysis,
    }
    stem = os.path.join(args.output_dir, OUTPUT_STEMS[args.corpus])
    write_json(f"{stem}.json", document)
    write_text(f"{stem}.md", report)
    plot_curves(args, analysis, f"{stem}_curves.png", mode)
    plot_weights(args, analysis, f"{stem}_weights.png", mode)
    print(report)
    say(f"wrote {stem}.{{json,md}}, {stem}_curves.png, {stem}_weights.png (runs: {root}, {clock(wall)})")
    failed = [name for name, run in analysis["runs"].items() if run.get("failed")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
