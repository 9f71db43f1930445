#!/usr/bin/env python
"""Choose the mixers' free constants on the tuning corpus, with the same budget for every mixer.

    python bench/tune_mixers.py [--quick] [--jobs 2] [--work-dir data/tuning] [--output-dir bench/results] [--fresh]

The evaluations (`mixing_quality.py`, `target_quality.py`) never read the tuning corpus
(`tuning_corpus.py`: Debian packages the demo corpus does not use, and the noise domain), so
constants chosen here are not fitted to the numbers those benchmarks report. The search was
declared before it ran and is the same for every mixer with free constants:

- budget: `CONFIGURATIONS` settings of its constants (its defaults before its first search, kept
  so that a repeated search tries the same settings, then draws from the ranges below, seeded),
  each trained with `SEEDS` seeds for the benchmarks' 450 steps on the benchmarks' GPT; uniform
  trains with the same seeds as the reference;
- what is chosen: the setting with the lowest mean over seeds of the final validation loss (the
  uniform mean over the real domains; the noise is left out, and the mixers that read an objective
  are given the real domains) or, for DGA, of the held-out target loss plus that validation loss
  (a task's loss must not be bought at any general cost);
- what is searched (log-uniform ranges): our bounded AC-ODM's (`acodm_bounded`, `runs.VARIANTS`)
  largest step, KL radius and pull towards the prior; DGA's step size; ADO's fit interval and
  warm-up (its other constants are the paper's); Aioli's rounds and steps per sweep segment (its
  other constants are the paper's); the temperature mixer's T. ODM and AC-ODM run at their
  reference code's constants, uniform and static have none. The alignment signal's thresholds (no
  step within one standard error, the full step at four) are part of how it reads noise, the same
  for our AC-ODM and DGA, and are not searched.

Writes `<output-dir>/tuning.json` (every setting's runs and means, the choice per mixer, each
run's commit) and `tuning.md`. Runs are cached per run (`runs.py`), so an interrupted search resumes.
A search of some mixers (`--mixers`) keeps the other mixers' results of an earlier search in the same
file, and their runs' commits, where that search had the same seeds, budget and ranges: a mixer whose
code changed is searched again alone.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import sys
from typing import Any, Optional, Sequence

import numpy

from common import REPO, describe_machine, say, write_json, write_text
from runs import read_json
from megatron_acodm.data.manifest import load_manifest
from mixing_quality_analysis import clock
from runs import PRESETS, VARIANTS, Run, add_run_options, code_versions, execute_runs, reads_objective, wall_s
from tuning_corpus import DOMAINS, TARGET, ensure_tuning_corpus

CONFIGURATIONS = 5
SEEDS = (101, 102)  # not the evaluations' seeds either
DRAW_SEED = 20261206
# Per mixer: each constant's option, its default before the first search and its log-uniform range; integers are rounded.
SEARCH = {
    "acodm_bounded": {"--acodm-max-step": (0.1, 0.02, 0.5), "--mixing-kl-radius": (0.25, 0.05, 1.0), "--mixing-prior-pull": (0.02, 0.002, 0.1)},
    "dga": {"--dga-step-size": (1.0, 0.1, 10.0)},
    "ado": {"--ado-fit-interval": (10, 3, 30), "--ado-warmup-fraction": (0.1, 0.03, 0.3)},
    "aioli": {"--aioli-rounds": (5, 2, 12), "--aioli-segment-steps": (2, 1, 4)},
    "temperature": {"--mixing-temperature": (2.0, 1.2, 10.0)},
}
INTEGER = {"--ado-fit-interval", "--aioli-rounds", "--aioli-segment-steps"}


def configurations(mixer: str) -> list[dict[str, float]]:
    """The mixer's settings to try: its defaults, then draws from its ranges (the same on every machine)."""
    space = SEARCH[mixer]
    generator = numpy.random.default_rng([DRAW_SEED, list(SEARCH).index(mixer)])
    chosen = [{option: default for option, (default, _, _) in space.items()}]
    while len(chosen) < CONFIGURATIONS:
        draw = {}
        for option, (_, low, high) in space.items():
            value = math.exp(generator.uniform(math.log(low), math.log(high)))
            draw[option] = round(value) if option in INTEGER else float(f"{value:.3g}")
        if draw not in chosen:
            chosen.append(draw)
    return chosen


class TuningRun(Run):
    """A run on the tuning corpus: a mixer at one setting of its constants (uniform: none). Every run
    is given the target set, so each final evaluation holds its held-out loss."""

    def __init__(self, root: str, mixer: str, seed: int, args: argparse.Namespace, setting: Optional[dict] = None, index: int = 0):
        super().__init__(root, mixer, seed, args, label=mixer if setting is None else f"{mixer}-c{index}")
        self.setting = setting or {}

    def mixer_arguments(self) -> list[str]:
        arguments = VARIANTS.get(self.mixer, ["--mixer", self.mixer])
        arguments = [*arguments, *(word for option, value in self.setting.items() for word in (option, str(value)))]
        arguments += ["--target-data-path", self.args.target_prefix]
        if reads_objective(arguments):  # they lower the real domains' loss, not the noise's
            arguments += ["--mixing-objective", ",".join(DOMAINS)]
        return arguments


def criterion(mixer: str, final: dict[str, Any]) -> float:
    """What the search lowers (the module's docstring): the real domains' validation loss, plus the
    target's held-out loss for DGA."""
    general = final["lm_loss_uniform"]
    return general + final["target_loss"][TARGET] if mixer == "dga" else general


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--quick", action="store_true", help="a minutes-long smoke run of the search: tiny model, 40 steps")
    add("--mixers", default=",".join(SEARCH), help=f"comma-separated, from {','.join(SEARCH)}")
    add_run_options(parser, "data/tuning")
    args = parser.parse_args(argv)
    for key, value in PRESETS["quick" if args.quick else "full"].items():
        setattr(args, key, value)
    args.mixers = [name.strip() for name in args.mixers.split(",") if name.strip()]
    unknown = [name for name in args.mixers if name not in SEARCH]
    if unknown:
        parser.error(f"unknown mixers {unknown}; choose from {', '.join(SEARCH)}")
    args.seeds = list(SEEDS)
    args.lr, args.min_lr, args.temperature, args.mixing_objective = 1e-3, 1e-4, 2.0, None
    args.tokenizer_type = "SentencePieceTokenizer"
    return args


def summarise(args: argparse.Namespace, runs: list[TuningRun], results: dict[str, dict]) -> dict[str, Any]:
    """Per mixer and setting: each seed's final numbers and the mean criterion; the setting chosen."""
    finals = {run.name: run.curves()[1]["final"] for run in runs if results[run.name].get("returncode") == 0}
    uniform = {seed: finals.get(f"uniform-seed{seed}") for seed in args.seeds}
    summary: dict[str, Any] = {"uniform": {str(seed): final for seed, final in uniform.items()}, "mixers": {}}
    for mixer in args.mixers:
        settings = []
        for index, setting in enumerate(configurations(mixer)):
            per_seed = {seed: finals.get(f"{mixer}-c{index}-seed{seed}") for seed in args.seeds}
            complete = all(final is not None for final in per_seed.values())
            settings.append({
                "setting": setting,
                "general_loss": {str(seed): final and final["lm_loss_uniform"] for seed, final in per_seed.items()},
                "target_loss": {str(seed): final and final["target_loss"][TARGET] for seed, final in per_seed.items()},
                "criterion": statistics.mean(criterion(mixer, final) for final in per_seed.values()) if complete else None,
            })
        scored = [entry for entry in settings if entry["criterion"] is not None]
        chosen = min(scored, key=lambda entry: entry["criterion"]) if len(scored) == len(settings) else None
        summary["mixers"][mixer] = {"settings": settings, "chosen": chosen and chosen["setting"],
                                    "default": settings[0]["setting"], "default_kept": chosen is not None and chosen is settings[0]}
    return summary


def markdown(args: argparse.Namespace, summary: dict[str, Any], run_wall: float, kept: Sequence[str] = ()) -> str:
    """The search as a page (`summary`: the results document, with the mixers `kept` from an earlier
    search): per mixer, the commit its runs ran at and every setting's mean criterion, the chosen one marked."""
    earlier = f" The results of {', '.join(kept)} are kept from an earlier search of the same protocol." if kept else ""
    uniform = [final["lm_loss_uniform"] for final in summary["uniform"].values() if final]
    lines = [
        "# Tuning the mixers' free constants",
        "",
        f"`python bench/tune_mixers.py{' --quick' if args.quick else ''}`: {CONFIGURATIONS} settings x {len(args.seeds)} "
        f"seeds ({', '.join(map(str, args.seeds))}) per mixer, {args.steps} steps each, on the tuning corpus "
        f"({', '.join(DOMAINS)} and noise; target set {TARGET}); the runs of this search took {clock(run_wall)} in all. The criterion: the "
        "final validation loss, uniform mean over the real domains (DGA: plus the target's held-out loss), mean over "
        f"the seeds; lower is better. The first setting of each mixer is its default before its first search.{earlier}",
        "",
        f"uniform: {statistics.mean(uniform):.4f}" if uniform else "uniform: not run",
        "",
    ]
    for mixer, entry in summary["mixers"].items():
        commits = sorted(commit for commit, names in summary["code"]["commits"].items() if any(_mixer_of(name) == mixer for name in names))
        lines += [f"## {mixer}", "", f"Runs at commit {', '.join(commit[:12] for commit in commits) or '-'}.", "", "| setting | criterion | " + " | ".join(f"seed {seed}" for seed in args.seeds) + " |",
                  "|---|---|" + "---|" * len(args.seeds)]
        for setting in entry["settings"]:
            mark = " **(chosen)**" if setting["setting"] == entry["chosen"] else ""
            values = " | ".join("-" if value is None else f"{value:.4f}" for value in setting["general_loss"].values())
            text = ", ".join(f"{option} {value}" for option, value in setting["setting"].items())
            criterion_text = "-" if setting["criterion"] is None else f"{setting['criterion']:.4f}"
            lines.append(f"| {text}{mark} | {criterion_text} | {values} |")
        lines.append("")
    return "\n".join(lines)


def _mixer_of(run_name: str) -> Optional[str]:
    """The mixer of a searched setting's run (`TuningRun`: <mixer>-c<index>-seed<seed>); None for uniform's."""
    match = re.fullmatch(r"(.+)-c\d+-seed\d+", run_name)
    return match and match.group(1)


def keep_earlier(document: dict[str, Any], earlier: Optional[dict[str, Any]]) -> list[str]:
    """Add to `document` the mixers that `earlier` (the file this search replaces) searched and this
    one did not, with their runs' commits, where both searches had the same seeds and budget and that
    mixer the same ranges. Returns the mixers kept."""
    if not earlier or any(earlier.get(key) != document[key] for key in ("mode", "seeds", "configurations", "draw_seed")):
        return []
    search = json.loads(json.dumps(document["search"]))  # as the file holds it: its ranges are lists
    kept = [mixer for mixer, entry in earlier.get("mixers", {}).items()
            if mixer not in document["mixers"] and earlier["search"].get(mixer) == search.get(mixer)]
    commits = document["code"]["commits"]
    for commit, names in earlier.get("code", {}).get("commits", {}).items():
        names = [name for name in names if _mixer_of(name) in kept]
        if names:
            commits[commit] = sorted(set(commits.get(commit, [])) | set(names))
    for mixer in kept:
        document["mixers"][mixer] = earlier["mixers"][mixer]
    document["mixers"] = {mixer: document["mixers"][mixer] for mixer in SEARCH if mixer in document["mixers"]}
    return kept


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    args.data_path, target_manifest, args.tokenizer_model = ensure_tuning_corpus(args.work_dir, REPO)
    args.target_prefix = next(domain.prefix for domain in load_manifest(target_manifest).domains if domain.name == TARGET)
    args.evaluated = list(DOMAINS)
    mode = "quick" if args.quick else "full"
    root = os.path.join(args.work_dir, f"runs-{mode}")
    runs = [TuningRun(root, "uniform", seed, args) for seed in args.seeds]
    for mixer in args.mixers:
        runs += [TuningRun(root, mixer, seed, args, setting, index)
                 for index, setting in enumerate(configurations(mixer)) for seed in args.seeds]
    say(f"tuning ({mode}): {len(runs)} runs of {args.steps} steps in {root}")
    results = execute_runs(runs, args.fresh, "tuning", jobs=args.jobs)
    summary = summarise(args, runs, results)
    run_wall = sum(wall_s(result) for result in results.values())
    document = {
        "benchmark": "tuning", "mode": mode, "domains": list(DOMAINS), "target": TARGET, "seeds": args.seeds,
        "configurations": CONFIGURATIONS, "search": SEARCH, "draw_seed": DRAW_SEED, **summary,
        "code": code_versions(results), "wall_s": {"sum_of_runs": run_wall},
        "environment": describe_machine(("python", "torch", "cpus", "threads_per_run", "machine"), threads_per_run=args.threads),
    }
    os.makedirs(args.output_dir, exist_ok=True)
    stem = os.path.join(args.output_dir, "tuning" if mode == "full" else "tuning_quick")
    kept = keep_earlier(document, read_json(f"{stem}.json"))
    if kept:
        say(f"kept the earlier search's results of {', '.join(kept)} (their runs' commits are in the file)")
    write_json(f"{stem}.json", document)
    report = markdown(args, document, run_wall, kept)
    write_text(f"{stem}.md", report)
    print(report)
    say(f"wrote {stem}.{{json,md}} (runs: {root})")
    return 1 if any(result.get("returncode") != 0 for result in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
