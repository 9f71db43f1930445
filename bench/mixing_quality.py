#!/usr/bin/env python
"""Mixing quality: does online mixing beat static blends on real text? Side by side, several seeds.

    python bench/mixing_quality.py [--quick] [--corpus demo|noisy] [--data-path domains.json --tokenizer-model M]
        [--target-data-path T] [--seeds 1,2,3,4,5] [--steps N] [--mixers uniform,temperature,odm,ado,aioli,acodm,acodm_proxy,...]
        [--final-eval-iters 128] [--jobs 1] [--work-dir data/mixing_quality] [--output-dir bench/results] [--fresh]

Trains the same small GPT on CPU under each mixer, with identical seeds, data, steps and optimiser
settings, one `python pretrain_acodm.py` subprocess per run, `--jobs` of them at a time (a proxy
and the transfers that read it in one thread, in order):

- `uniform` (the static reference), `temperature` (T = 5.59 on corpus tokens, chosen on the
  tuning corpus), the published online
  baselines `odm`, `ado` and `aioli` (each at its defaults; Aioli's sweeps of perturbed mixtures are
  steps of its run; `--quick` shrinks its schedule to one round with a one-step-per-domain sweep),
  `acodm` (non-proxy, the reference code's method at its defaults), our variant `acodm_bounded`
  (`runs.VARIANTS`: the actor trains and scales the alignment signal's bounded step), and
  `acodm_proxy`: a smaller proxy model trains AC-ODM with `--acodm-export-policy`, and its frozen
  actor drives the target (`--acodm-policy`); the proxy's steps are part of that mixer's cost and
  reported beside it. `static` (tokens-proportional) can be added with `--mixers`.
- Is a learned policy worth more than replaying what it did (`transfers.py`)? `acodm_proxy_replay`
  replays the AC-ODM proxy run's mixture on the target as a schedule of 10 phases, `acodm_proxy_mean`
  trains on its mean mixture as a static blend; `ado_proxy_replay` and `ado_proxy_mean` do the same
  with ADO trained on the same proxy model (`proxy_ado`). A section of the report compares each
  transfer, paired by seed, with its family's learned policy on the target (AC-ODM's frozen actor;
  for ADO, `ado` run online on the target).
- `--seed` changes the model's initialisation, the data order and the held-out samples; each seed
  (1 to 5 by default) runs every mixer, so differences are paired by seed.
- Each run's final checkpoint is evaluated once more on `--final-eval-iters` global batches of
  held-out sequences (`runs.py`), many more than the periodic evaluations read: the final losses
  come from it, with each domain's sampling error.

Reports, per mixer: the final losses (uniform mean over domains and corpus-token-weighted mean, and
per domain) with their spread over seeds, and the difference to each reference paired by seed with
its 95% t interval and p-value (`significance.py`: better or worse only where the interval excludes
zero); the steps needed to reach the reference's last periodic validation loss (linear
interpolation between evaluations; the ratio to the reference's steps); the realised mixture over
the run; and the per-step time and peak RSS (each subprocess's own `ru_maxrss`) against uniform.
Writes `<output-dir>/mixing_quality.json` (the summary, with each run's commit and code hash),
`mixing_quality.curves.json.gz` (every per-seed curve, the mean curves and the mixtures;
`result_files.py` reads the two back as one), `mixing_quality.md` (also printed),
`mixing_quality_curves.png` and `mixing_quality_weights.png`.

Without `--data-path` it uses the demo corpus, building it first (`tools/build_demo_corpus.py`,
`tools/preprocess_domains.py`) when `data/demo/indexed/domains.json` is missing. Runs go to
`<work-dir>/<quick|full>-<hash of the settings every run shares>/<mixer>-seed<S>/`; a run complete
under its current key (the code it runs, its command line, its inputs: `runs.py`) is not run again,
any other is (`--fresh` reruns everything). `--target-data-path` (a held-out target set for a
task-aligned mixer) is recorded but no mixer here reads it.

`--corpus noisy` asks whether a mixer learns to avoid data that cannot be learnt: the demo corpus
plus one domain, `noise`, of uniformly random ordinary token ids (a fixed seed; documents of the
demo's mean length, each ending in EOD) holding 40% of all corpus tokens. Its `.bin/.idx` pair and
a `domains.json` listing the demo's domains and `noise` are written once to `<work-dir>/noisy-corpus/`
(again only when the noise's recipe changes). The mixers that read `--mixing-objective` are given
`--mixing-objective <the demo's domains>` (they then lower the real domains' loss); the others read
none and are given none, and the tables mark which were. Every mean, steps-to-reach and ratio is
over the real domains only (noise's own loss is shown beside them); the references are `uniform`
and `static` (tokens-proportional, the blend a user would pick: it gives the noise its 40%); the
default mixers are uniform, static, odm, ado, aioli, acodm, acodm_bounded and the transfers; the mixture table shows
the noise's share first. Writes `mixing_quality_noisy.{json,curves.json.gz,md}`,
`mixing_quality_noisy_curves.png` and `mixing_quality_noisy_weights.png`.

This file runs the comparison: `corpora.py` provides the corpus, `runs.py` runs the training runs
(and reuses finished ones), `mixing_quality_analysis.py` turns the runs' metrics into figures,
`mixing_quality_report.py` writes the markdown page and `mixing_quality_plots.py` the plots.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from typing import Any, Optional, Sequence

from common import REPO, describe_machine, say, write_json, write_text
from corpora import DEMO_DATA, DEMO_TOKENIZER, NOISE_SHARE, ensure_corpus
from megatron_acodm.data.tokenizers import file_sha256
from megatron_acodm.errors import UserError
from mixing_quality_analysis import CURVES, REFERENCE, REFERENCES, analyse, clock, eval_interval, log_interval, parameter_count
from mixing_quality_plots import plot_curves, plot_weights
from mixing_quality_report import markdown
from result_files import save_results
from runs import PRESETS, SPLIT, TUNED_TEMPERATURE, VARIANTS, Run, add_run_options, code_versions, execute_runs, wall_s
from transfers import PROXIES, TRANSFERS, transfers_of

ALL_MIXERS = ("static", "uniform", "temperature", "odm", "ado", "aioli", "acodm", *VARIANTS, *TRANSFERS)
DEFAULT_MIXERS = {"demo": ("uniform", "temperature", "odm", "ado", "aioli", "acodm", *VARIANTS, *TRANSFERS),
                  "noisy": ("uniform", "static", "odm", "ado", "aioli", "acodm", *VARIANTS, *TRANSFERS)}
OUTPUT_STEMS = {"demo": "mixing_quality", "noisy": "mixing_quality_noisy"}


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
    add("--seeds", default=None, help="comma-separated --seed values (full: 1,2,3,4,5; quick: 1,2)")
    add("--steps", type=int, default=None, help="training steps of every run (full: 450; quick: 40)")
    add("--layers", type=int, default=None)
    add("--hidden", type=int, default=None)
    add("--heads", type=int, default=None)
    add("--seq-length", type=int, default=None)
    add("--global-batch", type=int, default=None)
    add("--micro-batch", type=int, default=None)
    add("--proxy-layers", type=int, default=None, help="the proxy model's layers (the AC-ODM and ADO proxies)")
    add("--proxy-hidden", type=int, default=None, help="the proxy model's hidden size")
    add("--evaluations", type=int, default=None, help="validation points per run (every steps/N)")
    add("--eval-iters", type=int, default=None, help="global batches of held-out samples per periodic validation")
    add("--final-eval-iters", type=int, default=None,
        help="global batches of held-out samples of each run's final evaluation (full: 128; quick: 16)")
    add("--log-points", type=int, default=None, help="train records per run (the mixture's time resolution)")
    add("--lr", type=float, default=1e-3)
    add("--min-lr", type=float, default=1e-4)
    add("--temperature", type=float, default=TUNED_TEMPERATURE, help="the temperature mixer's T (chosen on the tuning corpus)")
    add_run_options(parser, "data/mixing_quality")
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
    if args.final_eval_iters < 1:
        parser.error("--final-eval-iters must be at least 1")
    if args.steps < args.evaluations or args.steps < 2:
        parser.error("--steps must be at least --evaluations and 2")
    return args


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """What every run shares: its hash names the folder of the runs. What one mixer alone reads (the
    temperature, the objective) is left out: each run's own key holds it (`runs.py`), so a changed
    mixer option reruns that mixer's runs only. The demo's settings leave the corpus choice out."""
    return {
        "data_path": os.path.relpath(os.path.abspath(args.data_path), REPO),
        "data_sha256": file_sha256(args.data_path),
        "tokenizer_model": os.path.relpath(os.path.abspath(args.tokenizer_model), REPO),
        "steps": args.steps, "layers": args.layers, "hidden": args.hidden, "heads": args.heads,
        "seq_length": args.seq_length, "global_batch": args.global_batch, "micro_batch": args.micro_batch,
        "proxy_layers": args.proxy_layers, "proxy_hidden": args.proxy_hidden,
        "eval_interval": eval_interval(args), "eval_iters": args.eval_iters, "log_interval": log_interval(args),
        "lr": args.lr, "min_lr": args.min_lr, "threads": args.threads,
        **({} if args.corpus == "demo" else {"corpus": args.corpus}),
    }


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
    proxies = [proxy for proxy in PROXIES if transfers_of(proxy, args.mixers)]
    runs: list[Run] = []
    for seed in args.seeds:  # a seed's proxies before the transfers that read them
        runs += [Run(root, proxy, seed, args) for proxy in proxies]
        runs += [Run(root, mixer, seed, args) for mixer in args.mixers]
    say(f"mixing quality ({mode}): {len(runs)} runs of {args.steps} steps in {root}")
    started = time.perf_counter()
    results = execute_runs(runs, args.fresh, jobs=args.jobs)
    wall = time.perf_counter() - started
    run_wall = sum(wall_s(result) for result in results.values())

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
        "target_data_path_note": "recorded only: no mixer in this comparison reads a target set",
        "split": SPLIT,
        "code": code_versions(results),
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
    save_results(stem, document, CURVES)
    write_text(f"{stem}.md", report)
    plot_curves(args, analysis, f"{stem}_curves.png", mode)
    plot_weights(args, analysis, f"{stem}_weights.png", mode)
    print(report)
    say(f"wrote {stem}.{{json,curves.json.gz,md}}, {stem}_curves.png, {stem}_weights.png (runs: {root}, {clock(wall)})")
    failed = [name for name, run in analysis["runs"].items() if run.get("failed")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
