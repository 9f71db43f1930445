"""The search's distributed part: merge the experts at each mixture, evaluate, choose the next mixtures.

    [torchrun --nproc-per-node N] python -m megatron_acodm.mergemix.search_worker PLAN.json

Started by tools/mergemix.py with a plan (the evaluation's trainer arguments, the base and expert
checkpoints, the objective and the search's settings). Every rank merges and evaluates its own
shards with the trainer's evaluation (per-domain validation loss; with target sets, the loss on
their steering and held-out examples); rank 0 alone fits the surrogate and chooses mixtures,
which it broadcasts, appends one line per evaluated mixture to the results file and, at the end,
writes the search's outcome (its best mixture, the uniform one, how many it evaluated). A mixture
already in that file (an interrupted search run again) is read back, not evaluated again; the
search is deterministic, so it retraces its steps and goes on where it stopped.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Optional

import numpy
import torch

from megatron.core import parallel_state

from megatron_acodm.arguments import parse_args
from megatron_acodm.atomic_files import write_text_atomically
from megatron_acodm.errors import UserError, run_reporting_errors
from megatron_acodm.mixing.alignment import TARGET
from megatron_acodm.mixing.weighting import domain_weighting
from megatron_acodm.training.checkpoint import saved_run_state
from megatron_acodm.training.evaluation import domain_evaluation_sizes, evaluate, evaluation_batches, part_means
from megatron_acodm.training.inputs import RunInputs, build_blender, build_targets, open_inputs
from megatron_acodm.training.resume import check_same_model_shape
from megatron_acodm.training.setup import build_model, device, initialize
from megatron_acodm.mergemix.merged_model import MergedModel
from megatron_acodm.mergemix.results import ResultsFile
from megatron_acodm.mergemix.search import Surrogate, best_index, propose, seed_mixtures



class Evaluator:
    """Merges at a mixture and measures it; every rank calls it with the same mixture."""

    def __init__(self, args, plan: dict, inputs: RunInputs):
        self.args = args
        self.blender = build_blender(args, inputs.corpus)
        self.targets = build_targets(args, inputs.targets, self.blender)
        if self.blender.names != plan["domains"]:
            raise UserError(f"--data-path gives domains {self.blender.names}, the experts are for {plan['domains']}")
        model = build_model(args)
        for path in [plan["base"], *plan["experts"]]:
            check_same_model_shape(path, saved_run_state(path)["args"], args)
        self.model = model
        self.merged = MergedModel(model, plan["base"], plan["experts"])
        global_batch = args.global_batch_size
        self.domain_batches = evaluation_batches(domain_evaluation_sizes(self.blender, args.eval_iters, global_batch), global_batch)
        if not self.domain_batches and plan["objective"] != TARGET:
            raise UserError("the evaluation reads no validation sample: give --eval-iters > 0 and a --split with a validation share")
        self.target_batches = {}
        if self.targets is not None:
            self.target_batches = {
                "steering": (self.targets.steering_sample, evaluation_batches(self.targets.steering_sizes(), global_batch)),
                "held_out": (self.targets.held_out_sample, evaluation_batches(self.targets.held_out_sizes(), global_batch)),
            }
        self.device = device()
        self.dp = parallel_state.get_data_parallel_rank(), parallel_state.get_data_parallel_world_size()

    def _losses(self, read_sample, names, batches) -> dict:
        sums = evaluate(self.model, read_sample, len(names), batches, self.args.micro_batch_size, *self.dp, self.device)
        return dict(zip(names, part_means(sums)))

    def measure(self, mixture: numpy.ndarray) -> dict:
        self.merged.set_mixture(mixture)
        record = {"domain_loss": self._losses(self.blender.valid_sample, self.blender.names, self.domain_batches)}
        for part, (read_sample, batches) in self.target_batches.items():
            record[f"target_{part}_loss"] = self._losses(read_sample, self.targets.names, batches)
        return record


class Objective:
    """The number the search lowers, from an evaluation's record."""

    def __init__(self, text: str, evaluator: Evaluator):
        blender = evaluator.blender
        if text == TARGET:
            self.weights = None
        else:
            self.weights = domain_weighting(text, "--objective", blender.names, blender.initial_weights, blender.domain_tokens, every_domain=False)

    def __call__(self, record: dict) -> float:
        if self.weights is None:  # each target set alike, on the examples that steer
            losses = [loss for loss in record["target_steering_loss"].values() if loss is not None]
            return float(numpy.mean(losses)) if losses else float("nan")
        pairs = [(weight, loss) for weight, loss in zip(self.weights, record["domain_loss"].values()) if weight > 0 and loss is not None]
        total = sum(weight for weight, _ in pairs)
        return sum(weight * loss for weight, loss in pairs) / total if total > 0 else float("nan")


def _broadcast(value):
    holder = [value]
    torch.distributed.broadcast_object_list(holder, src=0)
    return holder[0]


class Search:
    def __init__(self, plan: dict, evaluator: Evaluator, objective: Objective, results: Optional[ResultsFile]):
        self.plan, self.evaluator, self.objective, self.results = plan, evaluator, objective, results
        self.total = plan["seed_mixtures"] + plan["rounds"] * plan["proposals"]
        self.records: list[dict] = []  # this search's evaluations so far, on rank 0: what the surrogate learns from

    def _evaluate(self, mixtures: Optional[numpy.ndarray], phase: str, predictions=None) -> None:
        """Every rank evaluates what rank 0 chose and has not evaluated before; rank 0 records it."""
        results = self.results
        found = None if results is None else [results.find(mixture) for mixture in mixtures]
        mixtures, missing = _broadcast((mixtures, None if found is None else [index for index, record in enumerate(found) if record is None]))
        for index, mixture in enumerate(mixtures):
            if index not in missing:
                if found is not None:
                    self.records.append(found[index])
                continue
            started = time.perf_counter()
            measured = self.evaluator.measure(mixture)
            if results is None:
                continue
            record = {
                "phase": phase, "mixture": dict(zip(self.plan["domains"], map(float, mixture))),
                "objective": self.objective(measured), **measured,
                "predicted": None if predictions is None else {"mean": float(predictions[0][index]), "std": float(predictions[1][index])},
                "seconds": time.perf_counter() - started,
            }
            results.append(record)
            self.records.append(record)
            best = numpy.nanmin([entry["objective"] for entry in self.records])
            print(f"[{len(self.records)}/{self.total}] {phase}: objective {record['objective']:.4f} (best {best:.4f}), "
                  f"{record['seconds']:.1f} s", flush=True)

    def _seen(self) -> tuple[numpy.ndarray, numpy.ndarray]:
        names = self.plan["domains"]
        mixtures = numpy.array([[record["mixture"][name] for name in names] for record in self.records])
        return mixtures, numpy.array([record["objective"] for record in self.records], dtype=float)

    def run(self) -> None:
        plan, on_rank_zero = self.plan, self.results is not None
        domains = len(plan["domains"])
        seeds = seed_mixtures(domains, plan["seed_mixtures"], plan["seed"], plan["min_weight"]) if on_rank_zero else None
        self._evaluate(seeds, "seed")
        for round_ in range(1, plan["rounds"] + 1):
            proposals = predictions = None
            if on_rank_zero:
                mixtures, scores = self._seen()
                finite = numpy.isfinite(scores)
                surrogate = Surrogate(plan["seed"] + round_).fit(mixtures[finite], scores[finite])
                proposals = propose(surrogate, mixtures, plan["proposals"], seed=plan["seed"] + round_, min_weight=plan["min_weight"])
                predictions = surrogate.predict(proposals)
            self._evaluate(proposals, f"round {round_}", predictions)
        if on_rank_zero:
            best = self.records[best_index(self._seen()[1])]
            print(f"best of {len(self.records)} merges: objective {best['objective']:.4f} at "
                  + ", ".join(f"{name} {weight:.3f}" for name, weight in best["mixture"].items()), flush=True)
            # This search's outcome: the results file may also hold other searches' mixtures (other seeds, floors).
            outcome = {"best": best, "uniform": self.records[0], "evaluated": len(self.records)}
            write_text_atomically(plan["outcome"], json.dumps(outcome, indent=2) + "\n")


def search(plan_path: str) -> None:
    with open(plan_path, encoding="utf-8") as stream:
        plan = json.load(stream)
    args = parse_args(plan["arguments"])
    inputs = open_inputs(args)
    initialize(args)
    evaluator = Evaluator(args, plan, inputs)
    objective = Objective(plan["objective"], evaluator)
    results = ResultsFile(plan["results"], plan["settings"]) if torch.distributed.get_rank() == 0 else None
    Search(plan, evaluator, objective, results).run()
    torch.distributed.barrier()


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return run_reporting_errors(lambda: search(argv[0]), "interrupted: the search's evaluations so far are kept")


if __name__ == "__main__":  # dist_checkpointing's loader may spawn processes that re-import this file
    sys.exit(main())
