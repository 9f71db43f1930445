#!/usr/bin/env python
"""MergeMix (arXiv 2601.17858): find a data mixture offline by merging briefly trained domain experts.

    python tools/mergemix.py --base CKPT --data-path domains.json --output blend.json
        [--objective uniform|tokens|data-path|NAME[,NAME...]|target] [--target-data-path T ...]
        [--expert-iters 50] [--expert-lr LR] [--seed-mixtures 32] [--search-rounds 3] [--proposals 4]
        [--min-weight 0] [--work-dir DIR] [--nproc-per-node N]
        [--tensor-model-parallel-size TP --pipeline-model-parallel-size PP]

1. Experts: from the base checkpoint (the `--save` folder of a pretrain_acodm.py run, e.g. a short
   uniform one), one expert per domain, `--expert-iters` steps at a constant learning rate on that
   domain alone, trained by pretrain_acodm.py itself with the base run's model, batch and optimizer
   settings. Experts that exist and match are reused; an interrupted one resumes.
2. Search: the merged model `theta_base + sum_k a_k (theta_k - theta_base)` stands in for a model
   trained on mixture a. It is evaluated with the trainer's evaluation at seed mixtures (uniform,
   the corners, Dirichlet samples), then for `--search-rounds` rounds a Gaussian-process surrogate
   of the objective proposes the mixtures it predicts best and each is verified by a real merge.
   Every evaluation is a line of `<work-dir>/search-<settings>.jsonl`; a search run again reads
   back what it had evaluated and goes on.
3. Output: the best evaluated mixture as a blend file, a domains.json with a weight per domain and
   its provenance: `--data-path blend.json --mixer static` trains on it, `--mixing-prior blend.json`
   starts an online mixer from it.

The objective (lower is better): the validation loss averaged over domains alike (uniform), by
corpus tokens (tokens), by the --data-path weights (data-path), over the named domains, or the loss
on the steering examples of the target sets of --target-data-path (target; their held-out loss is
recorded beside it, never searched on).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from typing import Optional, Sequence

from megatron_acodm.arguments import OneLineArgumentParser, command_line
from megatron_acodm.data.manifest import Manifest, parse_data_path
from megatron_acodm.data.targets import parse_target_split
from megatron_acodm.errors import UserError, run_reporting_errors
from megatron_acodm.output_paths import check_output_file, check_output_folder
from megatron_acodm.mixing.alignment import TARGET
from megatron_acodm.mixing.weighting import domain_weighting
from mixture_merging.experts import Base, Expert, ExpertSettings, checkpoint_fingerprint, launcher, model_arguments, open_base

TOOLS = os.path.dirname(os.path.abspath(__file__))


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = OneLineArgumentParser(
        prog="mergemix.py", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    add = parser.add_argument
    add("--base", required=True, help="the --save folder of a pretrain_acodm.py run: its latest checkpoint is the base")
    add("--data-path", nargs="+", required=True, help="the domains to mix: a domains.json, or [w1] prefix1 [w2] prefix2 ...")
    add("--output", required=True, help="the blend file to write (a domains.json with the found weights)")
    add("--objective", default="uniform", help="what the mixture lowers: uniform, tokens, data-path, NAME[,NAME...] or target")
    add("--target-data-path", nargs="+", default=None, help="target sets (as pretrain_acodm.py's), for --objective target")
    add("--target-split", default="50,50", help="steering,held-out shares of each target set's documents")
    add("--expert-iters", type=int, default=50, help="training steps of each domain expert")
    add("--expert-lr", type=float, default=None, help="the experts' constant learning rate (default: the base run's --lr)")
    add("--seed-mixtures", type=int, default=32, help="mixtures evaluated before the surrogate: uniform, the corners, Dirichlet samples")
    add("--search-rounds", type=int, default=3, help="rounds of surrogate fit, proposals and their real merges")
    add("--proposals", type=int, default=4, help="mixtures each round verifies by a real merge")
    add("--min-weight", type=float, default=0.0, help="every domain's least weight in the search (> 0 for a blend used as --mixing-prior)")
    add("--eval-iters", type=int, default=None, help="global batches of validation samples per evaluation (default: the base run's)")
    add("--seed", type=int, default=1234, help="the search's seed (seed mixtures, surrogate)")
    add("--work-dir", default=None, help="experts and results (default: <output without .json>.mergemix/)")
    add("--nproc-per-node", type=int, default=None, help="processes of each expert run and of the search (default: the base run's)")
    add("--tensor-model-parallel-size", type=int, default=None, help="the experts' and the merge's (default: the base run's)")
    add("--pipeline-model-parallel-size", type=int, default=None, help="the experts' and the merge's (default: the base run's)")
    args = parser.parse_args(argv)
    problem = next((message for failed, message in (
        (args.expert_iters < 1, "--expert-iters must be >= 1"),
        (args.expert_lr is not None and not args.expert_lr > 0, "--expert-lr must be positive"),
        (args.search_rounds < 0 or args.proposals < 1, "--search-rounds must be >= 0 and --proposals >= 1"),
        (args.objective == TARGET and not args.target_data_path, "--objective target needs --target-data-path (the target sets to lower)"),
        (not args.output.endswith(".json"), f"--output {args.output}: give a .json file name (the blend is a domains.json)"),
    ) if failed), None)
    if problem:
        parser.error(problem)
    return args


def _check_objective(args: argparse.Namespace, manifest: Manifest) -> None:
    """Refuse an objective that names no domain of --data-path before any expert trains."""
    if args.objective != TARGET:
        tokens = [domain.tokens for domain in manifest.domains] if all(domain.tokens for domain in manifest.domains) else None
        domain_weighting(args.objective, "--objective", manifest.names, manifest.initial_weights(), tokens, every_domain=False)
    parse_target_split(args.target_split)
    domains = len(manifest.domains)
    if args.seed_mixtures < domains + 1:
        raise UserError(f"--seed-mixtures {args.seed_mixtures}: at least {domains + 1} (uniform and the {domains} corners)")
    if not 0 <= args.min_weight < 1 / domains:
        raise UserError(f"--min-weight {args.min_weight}: give a value in [0, 1/{domains}) for {domains} domains")


def _run(command: list[str], what: str, folder: str) -> None:
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [TOOLS, os.environ.get("PYTHONPATH")])))
    process = subprocess.Popen(command, env=environment)
    try:
        returncode = process.wait()
    except KeyboardInterrupt:
        # Ctrl-C reached the child too: an expert finishes its step and saves (--exit-signal-handler).
        process.wait()
        raise
    if returncode != 0:
        raise UserError(
            f"{what} failed (exit status {returncode}); its output is above, its files under {folder}. "
            f"Fix the cause and run this command again: what is finished is kept"
        )


@contextlib.contextmanager
def _working_alone(work_dir: str):
    """Hold the work folder for this search: two searches in one folder would train the same experts."""
    os.makedirs(work_dir, exist_ok=True)
    with open(os.path.join(work_dir, ".lock"), "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"--work-dir {work_dir}: another tools/mergemix.py is working there; wait for it or give another --work-dir") from None
        yield


def train_experts(args: argparse.Namespace, base: Base, manifest: Manifest, settings: ExpertSettings, processes: int) -> list[Expert]:
    experts = [Expert(args.work_dir, domain, manifest.tokenizer, base, settings) for domain in manifest.domains]
    statuses = [expert.status() for expert in experts]  # every foreign expert is refused before any training
    for number, (expert, status) in enumerate(zip(experts, statuses), start=1):
        label = f"[mergemix] expert {number}/{len(experts)} {expert.domain.name}"
        if status == "complete":
            print(f"{label}: reused ({expert.checkpoint})", flush=True)
            continue
        print(f"{label}: {'resuming' if status == 'partial' else 'training'} {settings.iterations} steps from the base", flush=True)
        if status == "new":
            expert.prepare()
        _run(expert.command(processes), f"the expert of {expert.domain.name!r}", expert.folder)
    return experts


def search_settings(args: argparse.Namespace, base: Base, experts: list[Expert], evaluation: list[str]) -> dict:
    """What a merge's numbers depend on; its hash names the results file."""
    return {
        "base": base.identity(),
        "experts": {expert.domain.name: checkpoint_fingerprint(expert.checkpoint) for expert in experts},
        "evaluation": evaluation,
        "objective": args.objective,
    }


def run_search(args: argparse.Namespace, base: Base, manifest: Manifest, experts: list[Expert], layout: tuple[int, int], processes: int) -> dict:
    """The search's outcome: its best and uniform records, how many mixtures it evaluated, the results file."""
    values = model_arguments(base, *layout)
    values.update(
        data_path=[os.path.abspath(path) if path.endswith(".json") else path for path in args.data_path],
        train_iters=1, mixer="static", eval_iters=args.eval_iters if args.eval_iters is not None else base.args["eval_iters"],
        target_data_path=args.target_data_path, target_split=args.target_split,
    )
    evaluation = command_line(values)
    settings = search_settings(args, base, experts, evaluation)
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    results = os.path.join(args.work_dir, f"search-{digest}.jsonl")
    plan = {
        "arguments": evaluation, "base": base.path, "experts": [expert.checkpoint for expert in experts],
        "domains": manifest.names, "objective": args.objective, "seed_mixtures": args.seed_mixtures,
        "rounds": args.search_rounds, "proposals": args.proposals, "seed": args.seed, "min_weight": args.min_weight,
        "results": results, "settings": settings, "outcome": os.path.join(args.work_dir, f"search-{digest}.outcome.json"),
    }
    plan_path = os.path.join(args.work_dir, f"search-{digest}.plan.json")
    with open(plan_path, "w", encoding="utf-8") as stream:
        json.dump(plan, stream, indent=2)
    total = args.seed_mixtures + args.search_rounds * args.proposals
    print(f"[mergemix] search: {total} merged models, objective {args.objective}, results in {results}", flush=True)
    _run([*launcher(processes), "-m", "mixture_merging.search_worker", plan_path], "the search", args.work_dir)
    with open(plan["outcome"], encoding="utf-8") as stream:
        return {"results": results, **json.load(stream)}


def write_blend(args: argparse.Namespace, base: Base, manifest: Manifest, experts: list[Expert], outcome: dict) -> dict:
    best, uniform = outcome["best"], outcome["uniform"]
    provenance = {
        "method": "MergeMix (arXiv 2601.17858), tools/mergemix.py",
        "base": base.identity(),
        "experts": [{"domain": expert.domain.name, "checkpoint": expert.checkpoint, "fingerprint": checkpoint_fingerprint(expert.checkpoint)}
                    for expert in experts],
        "expert_iters": experts[0].settings.iterations, "expert_lr": experts[0].settings.lr,
        "expert_steps": len(experts) * experts[0].settings.iterations,
        "objective": args.objective, "merged_objective": best["objective"],
        "merged_objective_uniform": uniform["objective"],
        "merged_models_evaluated": outcome["evaluated"], "results": os.path.abspath(outcome["results"]),
    }
    manifest.with_weights(best["mixture"], provenance).save(args.output)
    return best


def mergemix(args: argparse.Namespace) -> None:
    if importlib.util.find_spec("sklearn") is None:
        raise UserError("tools/mergemix.py needs scikit-learn for its surrogate: pip install -e \".[mergemix]\"")
    base = open_base(args.base)
    manifest = parse_data_path(args.data_path)
    _check_objective(args, manifest)
    args.work_dir = args.work_dir or args.output[: -len(".json")] + ".mergemix"
    check_output_file(args.output, "--output", "blend.json")
    check_output_folder(args.work_dir, "--work-dir")
    layout = (args.tensor_model_parallel_size or base.args["tensor_model_parallel_size"],
              args.pipeline_model_parallel_size or base.args["pipeline_model_parallel_size"])
    processes = args.nproc_per_node or base.args.get("world_size", 1)
    settings = ExpertSettings(args.expert_iters, args.expert_lr or base.args["lr"], *layout)
    with _working_alone(args.work_dir):
        experts = train_experts(args, base, manifest, settings, processes)
        outcome = run_search(args, base, manifest, experts, layout, processes)
        best = write_blend(args, base, manifest, experts, outcome)
    weights = ", ".join(f"{name} {weight:.3f}" for name, weight in best["mixture"].items())
    print(f"[mergemix] wrote {args.output}: {weights} (merged objective {best['objective']:.4f}); train on it with "
          f"--data-path {args.output} --mixer static, or start an online mixer from it with --mixing-prior {args.output}", flush=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    return run_reporting_errors(
        lambda: mergemix(args), "interrupted: run the same command again to go on (finished experts and evaluations are kept)"
    )


if __name__ == "__main__":
    sys.exit(main())
