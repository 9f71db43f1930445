"""The layer-drift signal (`training.signals.WeightDrift`) in a tiny model, for tests/e2e/test_layer_drift.py.

Two modes:
- `steps --folder DIR --out FILE` (one process): builds parallel_worker's model (4 layers) with the
  trainer's setup and the distributed optimizer (the trainer's runs in the tests take the plain
  one), and takes STEPS Adam steps with `run_step` and a WeightDrift of layers 1 and 3. Before each
  step it reads those layers' weights from the model's own parameters and computes ||W - W_initial||
  itself. Then it saves two checkpoints, with and without the drift, loads the first into a new
  WeightDrift and takes one more step with it, then loads the second into another and takes one
  more. It writes {"drifts": [[...] per step], "expected": [[...] per step], "without_start": [...]}
  to FILE: "drifts" and "expected" up to the step after the first reload, "without_start" the
  drifts of the step after the second.
- `train ARGS...` (under torchrun or alone): pretrain_acodm.py with ARGS, where `--mixer drift_probe`
  is `DriftProbe`: the --data-path blend, as `--mixer static`, that reads LAYER_DRIFTS at depths 0.5
  and 1 and shows each step's drifts as its diagnostics `drift_0`, `drift_1` (metrics.jsonl, "mixer").
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy
import torch

import launching
from parallel_worker import NUM_DOMAINS, global_batches, layout_args, rank_batches
from megatron_acodm.mixing import LAYER_DRIFTS, StaticMixer, StepSignals
from megatron_acodm.mixing.registry import MIXERS
from megatron_acodm.training.checkpoint import load_checkpoint, open_checkpoint, save_checkpoint
from megatron_acodm.training.setup import build_model, build_optimizer, device, initialize
from megatron_acodm.training.signals import WeightDrift
from megatron_acodm.training.step import run_step

STEPS = 3
LAYERS = [1, 3]  # of parallel_worker's 4


class DriftProbe(StaticMixer):
    """`--mixer static` that reads the layer drifts and shows the last step's as its diagnostics."""

    needs = frozenset({LAYER_DRIFTS})
    norm_layer_depths = (0.5, 1.0)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.drifts = numpy.zeros(0)

    def _update(self, signals: StepSignals) -> None:
        self.drifts = signals.layer_weight_drifts

    def scalar_diagnostics(self) -> dict[str, float]:
        return {f"drift_{position}": float(drift) for position, drift in enumerate(self.drifts)}


def steps(folder: str, out: str) -> None:
    _, args = layout_args("distopt")
    initialize(args)
    model = build_model(args)
    optimizer, scheduler = build_optimizer(args, model)
    parameters = dict(model[0].module.named_parameters())
    weights = [parameters[f"decoder.layers.{layer}.mlp.linear_fc2.weight"] for layer in LAYERS]
    initial = [weight.detach().double().clone() for weight in weights]

    def step(drift: WeightDrift, samples: list[dict]) -> tuple[list[float], list[float]]:
        expected = [float(torch.linalg.norm(weight.detach().double() - start)) for weight, start in zip(weights, initial)]
        outcome = run_step(model, rank_batches(args, samples, 0, 1), NUM_DOMAINS, device(), optimizer, scheduler, drift=drift)
        assert outcome.update_successful
        return outcome.layer_drifts.tolist(), expected

    *batches, after_reload, after_second_reload = global_batches(args, STEPS + 2)
    drift = WeightDrift(LAYERS)
    drift.take_start(model)  # as the trainer's loop does before its first step
    measured = [step(drift, samples) for samples in batches]
    with_start, without_start = os.path.join(folder, "with_start"), os.path.join(folder, "without_start")
    save_checkpoint(with_start, STEPS, model, optimizer, {"iteration": STEPS}, args.use_distributed_optimizer, drift)
    save_checkpoint(without_start, STEPS, model, optimizer, {"iteration": STEPS}, args.use_distributed_optimizer)
    reloaded = WeightDrift(LAYERS)
    load_checkpoint(*open_checkpoint(with_start), model, optimizer, args.use_distributed_optimizer, reloaded)
    reloaded.take_start(model)  # keeps the loaded W_0
    measured.append(step(reloaded, after_reload))
    # Back to the weights of step STEPS, with nothing to take W_0 from but them.
    without = WeightDrift(LAYERS)
    load_checkpoint(*open_checkpoint(without_start), model, optimizer, args.use_distributed_optimizer, without)
    without.take_start(model)
    results = {
        "drifts": [drifts for drifts, _ in measured],
        "expected": [expected for _, expected in measured],
        "without_start": step(without, after_second_reload)[0],
    }
    with open(out, "w") as stream:
        json.dump(results, stream)
    torch.distributed.destroy_process_group()


def main() -> None:
    if sys.argv[1] == "train":
        MIXERS["drift_probe"] = DriftProbe
        sys.exit(launching.load_script(os.path.join(launching.REPO, "pretrain_acodm.py")).main(sys.argv[2:]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=["steps"])
    parser.add_argument("--folder", required=True, help="where the checkpoints go")
    parser.add_argument("--out", required=True)
    options = parser.parse_args()
    steps(options.folder, options.out)


if __name__ == "__main__":  # dist_checkpointing's saver spawns processes that re-import this file
    main()
