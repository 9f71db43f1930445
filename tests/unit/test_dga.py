"""DGA and the target sets it reads: the update rule against a hand computation, the split of a
target set, the importance baseline (their real runs: tests/e2e/test_target_runs.py)."""

from __future__ import annotations

import math
import os

import numpy
import pytest

from conftest import index_corpus
from megatron_acodm.data import Tokenizer, open_corpus, parse_data_path
from megatron_acodm.data.blender import DynamicBlender
from megatron_acodm.data.targets import TargetSets, open_target_sets, split_documents
from megatron_acodm.errors import UserError
from megatron_acodm.mixing import GRADIENT_GRAM, TARGET_GRADIENT, ACODMMixer, StepSignals, build_mixer
from megatron_acodm.mixing.dga import DGAMixer, exponentiated_gradient_step
from megatron_acodm.mixing.importance import domain_posteriors, importance_weights, ngram_features, steering_examples
from mixer_states import mixer_args

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
                       followed_weights=[1 / 3] * 3, half_gram=sketches @ sketches.T, half_tokens=tokens)


def _pass(step: int, target_a, target_b, domain_tokens=(1.0, 3.0)) -> StepSignals:
    """A target pass: domains with mean gradients [1, 0], [0, 1], [1, -1] per token (each half
    `domain_tokens`), the target's halves with mean gradients `target_a` and `target_b` (3 tokens each)."""
    means = numpy.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, -1.0], [1.0, -1.0], target_a, target_b])
    tokens = numpy.array([*domain_tokens] * 3 + [3.0, 3.0])
    return _target_step(step, means * tokens[:, None], tokens)


def test_dga_divides_by_the_moving_average_of_the_targets_norm_floored_at_its_error():
    eta, beta = 2.0, 0.5
    mixer = DGAMixer(NAMES, [1 / 3] * 3, step_size=eta, ema=beta, score_decay=0.5, interval=1)
    # Pass 0: d = <[2, 0], [2, 0]> = 4, the first value: no standard error yet, so nothing moves.
    mixer.observe(_pass(0, [2.0, 0.0], [2.0, 0.0]))
    assert numpy.array_equal(mixer.weights(), numpy.full(3, 1 / 3)) and (mixer.updates, mixer.skipped_passes) == (0, 1)

    # Pass 1: d = <[1, 1], [-1, 0]> = -1. The bias-corrected average (decay 0.5) weighs 4 and -1 by
    # 1/3 and 2/3: mean 2/3, spread (4 - 2/3)^2 / 3 + 2 (-1 - 2/3)^2 / 3 = 50/9; effective count
    # 0.75^2 / (0.25^2 + 0.5^2) = 1.8, so the error is sqrt(50/9 / 0.8) > 2/3: the floor binds.
    denominator = numpy.sqrt(50 / 9 / 0.8)
    target = numpy.array([0.0, 0.5])  # (g_A + g_B) / 2
    alignment = numpy.array([[1.0, 0.0] @ target, [0.0, 1.0] @ target, [1.0, -1.0] @ target]) / denominator
    tilted = numpy.full(3, 1 / 3) * numpy.exp(eta * alignment)
    expected = (1 - beta) / 3 + beta * tilted / tilted.sum()
    mixer.observe(_pass(1, [1.0, 1.0], [-1.0, 0.0]))
    assert mixer.weights() == pytest.approx(expected, rel=1e-12)

    # Pass 2: d = <[1, 1], [1, 2]> = 3. Weights 1/7, 2/7, 4/7: mean (4 - 2 + 12) / 7 = 2; spread
    # (4 + 2 * 9 + 4 * 1) / 7 = 26/7; count 0.875^2 / (0.125^2 + 0.25^2 + 0.5^2) = 7/3; error
    # sqrt(26/7 / (4/3)) = 1.67 < 2: the mean itself.
    target = numpy.array([1.0, 1.5])
    alignment = numpy.array([[1.0, 0.0] @ target, [0.0, 1.0] @ target, [1.0, -1.0] @ target]) / 2.0
    tilted = expected * numpy.exp(eta * alignment)
    expected = (1 - beta) * expected + beta * tilted / tilted.sum()
    mixer.observe(_pass(2, [1.0, 1.0], [1.0, 2.0]))
    assert mixer.weights() == pytest.approx(expected, rel=1e-12)
    assert mixer.domain_diagnostics()["score"][2] == pytest.approx((-0.5 / denominator + 2 * -0.25) / 3, rel=1e-12)

    # A pass whose target halves are empty says nothing: it is counted and moves nothing.
    empty = _pass(3, [1.0, 1.0], [1.0, 2.0])
    empty.half_tokens[6:] = 0.0
    empty.half_gram[6:, :] = empty.half_gram[:, 6:] = 0.0
    mixer.observe(empty)
    assert mixer.weights() == pytest.approx(expected, rel=1e-12)
    assert (mixer.updates, mixer.skipped_passes) == (2, 2) and mixer.scalar_diagnostics() == {"skipped_passes": 2.0}


def test_dga_measures_only_the_pass_steps_and_a_state_of_the_earlier_format_is_refused():
    mixer = DGAMixer(NAMES, [1 / 3] * 3, interval=2)
    assert mixer.signals_wanted(0) == {GRADIENT_GRAM, TARGET_GRADIENT}
    assert mixer.signals_wanted(1) == frozenset()  # no sketch at all between the passes
    mixer.observe(StepSignals(step=1, domain_loss_sum=numpy.ones(3), domain_tokens=numpy.full(3, 10.0), realised_counts=[2, 2, 2],
                              followed_weights=[1 / 3] * 3))
    assert mixer.skipped_passes == 0  # a step without the pass is no skipped pass
    state = mixer.state_dict()
    del state["format"]
    with pytest.raises(UserError, match="the checkpoint's DGAMixer state has format 1, this version reads format 2 .*start a new one"):
        DGAMixer(NAMES, [1 / 3] * 3, interval=2).load_state_dict(state)


def test_acodm_with_the_target_objective_measures_the_target_on_the_pass_steps_only():
    args = mixer_args("--mixer", "acodm", "--acodm-reward", "alignment", "--mixing-objective", "target", "--target-data-path", "t.json", "--dga-interval", "3", train_iters=10)
    acodm = build_mixer("acodm", names=NAMES, initial_weights=[1, 1, 1], domain_tokens=[1e6, 2e6, 3e6], args=args)
    assert isinstance(acodm, ACODMMixer) and TARGET_GRADIENT in acodm.needs and acodm.signal.rows == 4
    assert [TARGET_GRADIENT in acodm.signals_wanted(step) for step in range(4)] == [True, False, False, True]


# ------------------------------------------------------------------------------------------ target sets


def test_the_split_is_fixed_by_the_name_disjoint_and_complete():
    steering, held_out = split_documents("gsm8k", 8, 0.5)
    assert len(steering) == 4 and len(held_out) == 4
    assert sorted([*steering, *held_out]) == list(range(8))
    again = split_documents("gsm8k", 8, 0.5)
    assert numpy.array_equal(again[0], steering) and numpy.array_equal(again[1], held_out)
    assert not numpy.array_equal(split_documents("quiz", 8, 0.5)[0], steering)
    assert [len(part) for part in split_documents("tiny", 2, 0.99)] == [1, 1]  # each part keeps a document


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
