"""The target pass in real runs of pretrain_acodm.py: it leaves training bitwise as it was, runs under
data and tensor parallelism (the data-parallel ranks' sketches add up to one process's), and is
refused under pipeline parallelism with one line."""

from __future__ import annotations

import math
import os

import numpy
import pytest
import torch
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

import trainer_runs as runs
from megatron_acodm.metrics.reader import read_metrics

DGA = ["--mixer", "dga", "--dga-interval", "2"]


def _arguments(corpus, tokenizer_model, target_set, save, *extra):
    return runs.arguments(corpus, tokenizer_model, save, "--target-data-path", target_set, "--train-iters", "8", *extra)


def _checkpoint_tensors(save: str, iteration: int) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint (model and optimizer), read without a process group."""
    converted = os.path.join(save, f"converted-{iteration}.pt")
    dcp_to_torch_save(os.path.join(save, f"iter_{iteration:07d}"), converted)
    return {key: value for key, value in torch.load(converted, weights_only=False).items() if torch.is_tensor(value)}


def test_the_target_pass_leaves_training_bitwise_as_it_was(tmp_path, preprocessed_corpus, tokenizer_model, target_set):
    """DGA with step size 0 and no average keeps the uniform weights exactly: its target pass runs
    but its result is discarded. Against a uniform run: the same losses, weights and optimizer
    state, bit for bit, with dropout on (a pass that drew random numbers would change it)."""
    saves = {name: str(tmp_path / name) for name in ("discarded", "uniform")}
    runs.train(tmp_path, _arguments(preprocessed_corpus, tokenizer_model, target_set, saves["discarded"], *DGA,
                                    "--dga-step-size", "0", "--dga-ema", "1", "--hidden-dropout", "0.2"))
    runs.train(tmp_path, _arguments(preprocessed_corpus, tokenizer_model, target_set, saves["uniform"], "--mixer", "uniform",
                                    "--hidden-dropout", "0.2"))
    (_, train_d, valid_d), (_, train_u, valid_u) = (read_metrics(os.path.join(save, "metrics.jsonl")) for save in saves.values())
    # the pass ran: the discarded run measured the domains' alignment with the target
    assert any(abs(domain["score"]) > 0 for record in train_d for domain in record["domains"].values())
    for record_d, record_u in zip(train_d, train_u, strict=True):
        assert record_d["lm_loss"] == record_u["lm_loss"] and record_d["grad_norm"] == record_u["grad_norm"]
        assert [domain["weight"] for domain in record_d["domains"].values()] == [1 / 3] * 3
    assert [record["targets"] for record in valid_d] == [record["targets"] for record in valid_u]
    assert [record["iteration"] for record in valid_d] == [4, 8]  # the held-out target loss at every evaluation
    assert all(math.isfinite(record["targets"]["task"]["loss"]) for record in valid_d)
    tensors = [_checkpoint_tensors(save, 8) for save in saves.values()]
    assert tensors[0].keys() == tensors[1].keys() and len(tensors[0]) > 10
    for key, tensor in tensors[0].items():
        assert torch.equal(tensor, tensors[1][key]), key


@pytest.mark.parametrize("layout", ["dp2", "tp2"])
def test_dga_under_data_and_tensor_parallelism(tmp_path, preprocessed_corpus, tokenizer_model, target_set, layout):
    save = str(tmp_path / layout)
    # without dropout a data-parallel rank draws nothing its one-process counterpart would not
    extra = ["--hidden-dropout", "0", "--attention-dropout", "0", *(["--tensor-model-parallel-size", "2"] if layout == "tp2" else [])]
    runs.train(tmp_path, _arguments(preprocessed_corpus, tokenizer_model, target_set, save, *DGA, "--dga-step-size", "20", *extra), processes=2)
    _, train, valid = read_metrics(os.path.join(save, "metrics.jsonl"))
    weights = numpy.array([[domain["weight"] for domain in record["domains"].values()] for record in train])
    assert numpy.allclose(weights.sum(axis=1), 1.0) and numpy.ptp(weights, axis=0).max() > 1e-3
    assert all(math.isfinite(record["targets"]["task"]["loss"]) for record in valid)
    if layout == "dp2":  # the data-parallel ranks' sketches add up to the one-process sketch
        single = str(tmp_path / "single")
        runs.train(tmp_path, _arguments(preprocessed_corpus, tokenizer_model, target_set, single, *DGA, "--dga-step-size", "20", *extra))
        single_weights = [[domain["weight"] for domain in record["domains"].values()] for record in read_metrics(os.path.join(single, "metrics.jsonl"))[1]]
        assert weights == pytest.approx(numpy.array(single_weights), abs=1e-6)


def test_dga_under_pipeline_parallelism_is_refused_at_start(tmp_path, preprocessed_corpus, tokenizer_model, target_set):
    save = str(tmp_path / "pp2")
    completed = runs.run(runs.ENTRY, _arguments(preprocessed_corpus, tokenizer_model, target_set, save, *DGA,
                                                 "--pipeline-model-parallel-size", "2"), cwd=str(tmp_path), processes=2)
    assert completed.returncode != 0  # torchrun's own code; rank 0 left with 2
    errors = [line for line in completed.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: --mixer dga with a target set needs --pipeline-model-parallel-size 1: its target pass runs the "
                      "model outside the pipeline schedule; use tensor or data parallelism"]
    assert not os.path.exists(os.path.join(save, "iter_0000001"))
