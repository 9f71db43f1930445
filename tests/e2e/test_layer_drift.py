"""The layer-drift signal (`StepSignals.layer_weight_drifts`): ||W - W_0|| of chosen `linear_fc2`
weights, W_0 as the run's first step found them, measured at every step and kept by the checkpoint.

tests/drift_worker.py drives `run_step` and the checkpoint functions directly (the distance against
one the worker computes from the model's own parameters), and runs pretrain_acodm.py with a test
mixer that reads the drifts and logs them (`DriftProbe`, `--mixer drift_probe`).
"""

from __future__ import annotations

import json
import os
import shutil

import numpy

import launching
import trainer_runs as runs
from megatron_acodm.training.checkpoint import TRACKER

WORKER = os.path.join(launching.TESTS, "drift_worker.py")
# No dropout: tensor-parallel layouts then compute the same function, in another order of fp32 sums.
PROBE = ["--mixer", "drift_probe", "--train-iters", "4", "--hidden-dropout", "0", "--attention-dropout", "0", "--eval-iters", "0"]


def _worker(folder, arguments: list[str], processes: int | None = None):
    """Run tests/drift_worker.py to completion; fail the test with its output otherwise."""
    completed = launching.run(WORKER, arguments, cwd=str(folder), processes=processes)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return completed


def _drifts(save: str) -> dict[int, list[float]]:
    """{iteration: [drift of the layer at depth 0.5, at depth 1]} of the steps DriftProbe observed."""
    _, _, records = runs.losses(save)
    return {record["iteration"]: [record["mixer"]["drift_0"], record["mixer"]["drift_1"]] for record in records}


def test_drift_is_the_distance_from_the_initial_weights_and_a_checkpoint_keeps_them(tmp_path):
    out = tmp_path / "drifts.json"
    _worker(tmp_path, ["steps", "--folder", str(tmp_path / "checkpoints"), "--out", str(out)])
    result = json.loads(out.read_text())
    drifts, expected = numpy.array(result["drifts"]), numpy.array(result["expected"])
    assert drifts.shape == (4, 2)  # three steps, then one after the reload
    assert (drifts[0] == 0).all()  # the first step finds the weights where they started
    assert (expected[1:] > 0).all()
    # After the reload the drift still counts from the initial weights, not from the reloaded ones.
    numpy.testing.assert_allclose(drifts, expected, rtol=1e-6, atol=0)
    # A checkpoint without them: W_0 is the weights it holds.
    assert result["without_start"] == [0.0, 0.0]


def test_a_checkpoint_saved_at_tensor_parallel_2_resumes_at_1_with_the_drifts_of_the_run_that_went_on(
    tmp_path, preprocessed_corpus, tokenizer_model
):
    went_on, moved = str(tmp_path / "went_on"), str(tmp_path / "moved")
    tensor_parallel = ["--tensor-model-parallel-size", "2", "--save-interval", "2"]
    _worker(tmp_path, ["train", *runs.arguments(preprocessed_corpus, tokenizer_model, went_on, *PROBE, *tensor_parallel)], processes=2)
    shutil.copytree(went_on, moved)
    with open(os.path.join(moved, TRACKER), "w") as tracker:  # back to iteration 2, as a user would
        tracker.write("2\n")
    resumed = _worker(tmp_path, ["train", *runs.arguments(preprocessed_corpus, tokenizer_model, moved, *PROBE, "--load", moved)])
    assert f"resumed from {moved}/iter_0000002 at iteration 2" in resumed.stdout
    assert "holds no starting weights" not in resumed.stdout
    expected, got = _drifts(went_on), _drifts(moved)
    assert list(got) == list(expected) == [1, 2, 3, 4]
    assert expected[1] == [0.0, 0.0] and min(expected[3]) > 0
    # Iterations 3 and 4 at one rank, from the two ranks' W_0: the same sums in another order.
    numpy.testing.assert_allclose([got[3], got[4]], [expected[3], expected[4]], rtol=1e-5, atol=0)
