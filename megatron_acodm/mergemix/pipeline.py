"""MergeMix end to end, as `tools/mergemix.py` runs it: domain experts trained from a base checkpoint,
a search over merged models, and the best mixture written as a blend file.

Experts and the search run as their own processes (`pretrain_acodm.py`, `search_worker`), under
torchrun when several ranks are asked for; everything they finish is kept, so a rerun goes on.
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

from megatron_acodm.arguments import command_line
from megatron_acodm.data.manifest import Manifest, parse_data_path
from megatron_acodm.data.targets import parse_target_split
from megatron_acodm.errors import UserError
from megatron_acodm.mergemix.experts import Base, Expert, ExpertSettings, checkpoint_fingerprint, launcher, model_arguments, open_base
from megatron_acodm.mixing.alignment import TARGET
from megatron_acodm.mixing.weighting import domain_weighting
from megatron_acodm.output_paths import check_output_file, check_output_folder


def check_objective(args: argparse.Namespace, manifest: Manifest) -> None:
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
    process = subprocess.Popen(command)
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
    _run([*launcher(processes), "-m", "megatron_acodm.mergemix.search_worker", plan_path], "the search", args.work_dir)
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
    """Experts, search and blend for `tools/mergemix.py`'s arguments; what is finished is kept."""
    if importlib.util.find_spec("sklearn") is None:
        raise UserError("tools/mergemix.py needs scikit-learn for its surrogate: pip install -e \".[mergemix]\"")
    base = open_base(args.base)
    manifest = parse_data_path(args.data_path)
    check_objective(args, manifest)
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
