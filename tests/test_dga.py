"""DGA and the target sets it reads: the update rule against a hand computation, the split of a
target set, the importance baseline, and real runs (the target pass leaves training bitwise as it
was, resumes exactly, runs under data and tensor parallelism, and is refused under pipeline
parallelism with one line)."""

from __future__ import annotations

import argparse
import math
import os

import numpy
import pytest
import torch
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

import trainer_runs as runs
from conftest import _generated_texts, index_corpus
from megatron_acodm.arguments import parse_args
from megatron_acodm.data import Tokenizer, open_corpus, parse_data_path
from megatron_acodm.data.blender import DynamicBlender
from megatron_acodm.data.targets import TargetSets, open_target_sets, split_documents
from megatron_acodm.errors import UserError
from megatron_acodm.mixing import ACODMMixer, StepSignals, build_mixer
from megatron_acodm.mixing.dga import DGAMixer, exponentiated_gradient_step
from megatron_acodm.mixing.importance import domain_posteriors, importance_weights, ngram_features, steering_examples
from mixer_states import assert_decides_alike, through_checkpoint
from megatron_acodm.metrics.reader import read_metrics

NAMES = ["prose", "code", "maths"]


# ------------------------------------------------------------------------------------------ the rule


def test_the_step_is_exponentiated_gradient_then_the_moving_average():
    weights, alignment = numpy.array([0.5, 0.25, 0.25]), numpy.array([0.2, -0.1, 0.4])
    tilted = [0.5 * math.exp(0.4), 0.25 * math.exp(-0.2), 0.25 * math.exp(0.8)]  # w e^(eta a), eta = 2
    expected = [0.7 * w + 0.3 * t / sum(tilted) for w, t in zip(weights, tilted)]  # beta = 0.3
    assert exponentiated_gradient_step(weights, alignment, 2.0, 0.3) == pytest.approx(expected, rel=1e-12)


def _target_step(step: int, sketches: numpy.ndarray, tokens: numpy.ndarray, counts=(2, 2, 2)) -> StepSignals:
    """A step whose sketch rows (domains' halves, then the target's) are `sketches`, with `tokens` per row."""
    return StepSignals(step=step, domain_loss_sum=numpy.ones(3), domain_tokens=numpy.full(3, 10.0), realised_counts=list(counts),
                       half_gram=sketches @ sketches.T, half_tokens=tokens)


def test_dga_aligns_with_the_target_by_mean_gradients_and_ignores_steps_without_it():
    generator = numpy.random.default_rng(3)
    sketches = generator.normal(size=(8, 16))
    tokens = numpy.array([10.0, 12.0, 7.0, 9.0, 20.0, 15.0, 5.0, 6.0])
    mixer = DGAMixer(NAMES, [1 / 3] * 3, step_size=2.0, ema=0.5)

    # By hand: mean gradients of each domain (its two halves together) and the target's two halves.
    means = [(sketches[2 * k] + sketches[2 * k + 1]) / (tokens[2 * k] + tokens[2 * k + 1]) for k in range(3)]
    target_a, target_b = sketches[6] / tokens[6], sketches[7] / tokens[7]
    target = (sketches[6] + sketches[7]) / (tokens[6] + tokens[7])
    alignment = numpy.array([mean @ target for mean in means]) / (target_a @ target_b)
    expected = exponentiated_gradient_step(numpy.full(3, 1 / 3), alignment, 2.0, 0.5)

    without_target = tokens.copy()
    without_target[6:] = 0.0  # a step without the target pass: its rows are empty
    mixer.observe(_target_step(0, numpy.where(without_target[:, None] > 0, sketches, 0.0), without_target))
    assert numpy.array_equal(mixer.weights(), numpy.full(3, 1 / 3)) and mixer.updates == 0
    mixer.observe(_target_step(1, sketches, tokens))
    assert mixer.weights() == pytest.approx(expected, rel=1e-9)
    assert mixer.updates == 1 and mixer.domain_diagnostics()["score"] == pytest.approx(alignment, rel=1e-9)


def test_dga_state_round_trips_to_an_exact_continuation():
    generator = numpy.random.default_rng(5)
    tokens = numpy.full(8, 10.0)
    steps = [_target_step(step, generator.normal(size=(8, 16)), tokens) for step in range(4)]
    original = DGAMixer(NAMES, [0.5, 0.3, 0.2], step_size=1.5, ema=0.2, floor=0.01)
    for signals in steps[:2]:
        original.observe(signals)
    restored = DGAMixer(NAMES, [0.5, 0.3, 0.2], step_size=1.5, ema=0.2, floor=0.01)
    restored.load_state_dict(through_checkpoint(original.state_dict()))
    assert_decides_alike(original, restored, range(2, 4), lambda step, weights: steps[step])
    assert original.weights().min() >= 0.01 and original.weights().sum() == pytest.approx(1.0)


def test_dga_and_the_target_objective_refuse_what_they_cannot_use():
    run = argparse.Namespace(train_iters=10)
    with pytest.raises(UserError, match="--mixer dga needs --target-data-path"):
        build_mixer("dga", names=NAMES, initial_weights=[1, 1, 1], args=run)
    with pytest.raises(UserError, match="--mixing-objective target needs --target-data-path"):
        build_mixer("acodm", names=NAMES, initial_weights=[1, 1, 1], args=argparse.Namespace(train_iters=10, mixing_objective="target"))
    with pytest.raises(UserError, match="--dga-ema must be in"):
        DGAMixer(NAMES, [1 / 3] * 3, ema=0.0)
    with pytest.raises(UserError, match="--dga-step-size must be >= 0"):
        DGAMixer(NAMES, [1 / 3] * 3, step_size=-1.0)
    targeted = argparse.Namespace(train_iters=10, mixing_objective="target", target_data_path=["t.json"])
    acodm = build_mixer("acodm", names=NAMES, initial_weights=[1, 1, 1], args=targeted)
    assert isinstance(acodm, ACODMMixer) and "target_gradient" in acodm.needs and acodm.signal.rows == 4
    with pytest.raises(UserError, match="published .* takes no --mixing-objective target"):
        build_mixer("acodm", names=NAMES, initial_weights=[1, 1, 1], args=argparse.Namespace(**vars(targeted), acodm_reward="published"))


# ------------------------------------------------------------------------------------------ target sets


def test_the_split_is_fixed_by_the_name_disjoint_and_complete():
    steering, held_out = split_documents("gsm8k", 8, 0.5)
    assert len(steering) == 4 and len(held_out) == 4
    assert sorted([*steering, *held_out]) == list(range(8))
    again = split_documents("gsm8k", 8, 0.5)
    assert numpy.array_equal(again[0], steering) and numpy.array_equal(again[1], held_out)
    assert not numpy.array_equal(split_documents("quiz", 8, 0.5)[0], steering)
    assert [len(part) for part in split_documents("tiny", 2, 0.99)] == [1, 1]  # each part keeps a document


@pytest.fixture(scope="module")
def target_set(tmp_path_factory, tokenizer_model) -> str:
    """A target set of 30 code-like documents: its domains.json."""
    return index_corpus(tmp_path_factory.mktemp("target"), tokenizer_model, {"task": _generated_texts("code", 30, seed=5)})


def _blender(corpus: str, tokenizer: Tokenizer, seed: int) -> DynamicBlender:
    return DynamicBlender(open_corpus(parse_data_path([corpus]), tokenizer), seq_length=32, global_batch_size=8, seed=seed, split="90,10,0")


def test_target_sets_hold_out_the_same_examples_whatever_the_seed(preprocessed_corpus, target_set, tokenizer):
    sets = {seed: TargetSets(open_target_sets([target_set], tokenizer), _blender(preprocessed_corpus, tokenizer, seed).config) for seed in (1, 2)}
    for seed, targets in sets.items():
        (target,) = targets.sets
        steering_documents, held_out_documents = set(target.steering.indices), set(target.held_out.indices)
        assert not steering_documents & held_out_documents and len(steering_documents | held_out_documents) == 30
    assert numpy.array_equal(sets[1].sets[0].held_out.indices, sets[2].sets[0].held_out.indices)

    targets = sets[1]
    size = len(targets.sets[0].steering)
    first = targets.steering_batch(0, size)
    assert numpy.array_equal(first[1], targets.steering_batch(0, size)[1])  # a pure function of the index
    assert sorted(first[1]) == list(range(size))  # one epoch: every steering sample once
    assert sorted(numpy.concatenate([targets.steering_batch(index, 3)[1] for index in range(size)])) == sorted(list(range(size)) * 3)

    # Several sets take turns, and each walks its own samples an epoch at a time.
    several = TargetSets(open_target_sets([preprocessed_corpus], tokenizer), _blender(preprocessed_corpus, tokenizer, 1).config)
    batches = [several.steering_batch(index, 5) for index in range(40)]
    set_ids, sample_ids = (numpy.concatenate(part) for part in zip(*batches))
    assert set_ids.tolist() == [index % 3 for index in range(200)]
    for set_id, target in enumerate(several.sets):
        drawn, epoch = sample_ids[set_ids == set_id], len(target.steering)
        assert len(drawn) >= epoch and sorted(drawn[:epoch]) == list(range(epoch)), target.name


def test_bad_target_sets_are_refused_with_one_line(tmp_path, preprocessed_corpus, target_set, tokenizer, tokenizer_model):
    config = _blender(preprocessed_corpus, tokenizer, 1).config
    single = index_corpus(tmp_path / "single", tokenizer_model, {"one": ["just one example, long enough " * 5]})
    with pytest.raises(UserError, match="target set 'one' has 1 document; it needs at least two"):
        TargetSets(open_target_sets([single], tokenizer), config)
    with pytest.raises(UserError, match="--target-data-path .*: is a folder"):
        TargetSets(open_target_sets([os.path.dirname(target_set)], tokenizer), config)
    with pytest.raises(UserError, match="--target-split '1,0': give two positive shares"):
        TargetSets(open_target_sets([target_set], tokenizer), config, split="1,0")
    short = index_corpus(tmp_path / "short", tokenizer_model, {"short": ["a b", "c d", "e f"]})
    with pytest.raises(UserError, match="hold no sample of 33 tokens"):
        TargetSets(open_target_sets([short], tokenizer), config)


# ------------------------------------------------------------------------------------------ importance


def test_domain_posteriors_are_bayes_rule_over_hashed_ngrams():
    log_probabilities = numpy.log(numpy.random.default_rng(0).dirichlet(numpy.ones(1 << 16), size=2))
    example = numpy.array([5, 9, 5, 12])
    features = ngram_features(example)
    assert len(features) == 4 + 3 and len(set(features.tolist())) == 6  # unigram 5 twice; bigrams differ
    scores = [log_probabilities[k, features].sum() for k in range(2)]
    expected = numpy.exp(scores - numpy.max(scores))
    assert domain_posteriors(log_probabilities, [example])[0] == pytest.approx(expected / expected.sum(), rel=1e-9)


def test_importance_weights_favour_the_domain_that_explains_the_target(preprocessed_corpus, target_set):
    prefixes = [domain.prefix for domain in parse_data_path([preprocessed_corpus]).domains]
    examples = steering_examples([target_set], "50,50")
    assert len(examples) == 1 and len(examples[0]) == 15  # the steering half of 30 documents
    weights = dict(zip(parse_data_path([preprocessed_corpus]).names, importance_weights(prefixes, examples)))
    assert sum(weights.values()) == pytest.approx(1.0) and weights["code"] > 0.9


# ------------------------------------------------------------------------------------------ real runs

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


def test_dga_resumes_exactly_and_importance_keeps_its_weights(tmp_path, preprocessed_corpus, tokenizer_model, target_set):
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    runs.train(tmp_path, _arguments(preprocessed_corpus, tokenizer_model, target_set, straight, *DGA, "--dga-step-size", "20"))
    runs.train(tmp_path, _arguments(preprocessed_corpus, tokenizer_model, target_set, resumed, *DGA, "--dga-step-size", "20", "--exit-interval", "4"))
    runs.train(tmp_path, _arguments(preprocessed_corpus, tokenizer_model, target_set, resumed, *DGA, "--dga-step-size", "20", "--load", resumed))
    records = [read_metrics(os.path.join(save, "metrics.jsonl"))[1] for save in (straight, resumed)]
    weights = [[[domain["weight"] for domain in record["domains"].values()] for record in train] for train in records]
    assert weights[0] == weights[1] and [r["lm_loss"] for r in records[0]] == [r["lm_loss"] for r in records[1]]
    assert numpy.ptp(numpy.array(weights[0]), axis=0).max() > 1e-3  # the weights moved

    importance = str(tmp_path / "importance")
    runs.train(tmp_path, _arguments(preprocessed_corpus, tokenizer_model, target_set, importance, "--mixer", "importance"))
    prefixes = [domain.prefix for domain in parse_data_path([preprocessed_corpus]).domains]
    expected = importance_weights(prefixes, steering_examples([target_set], "50,50"))
    for record in read_metrics(os.path.join(importance, "metrics.jsonl"))[1]:
        assert [domain["weight"] for domain in record["domains"].values()] == pytest.approx(expected, rel=1e-12)


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


def test_parse_args_checks_the_target_options():
    with pytest.raises(SystemExit):
        parse_args(["--data-path", "d.json", "--tokenizer-model", "t", "--train-iters", "4", "--dga-interval", "0"])
