"""Aioli on hand-made step signals: the interaction matrix fitted from a sweep, its normalisation, the
schedule of sweeps, the mixture against a hand computation over two rounds, its options and schedule
state (what every mixer shares: tests/unit/test_mixer_contract.py)."""

from __future__ import annotations

import math

import numpy
import pytest

from megatron_acodm.errors import UserError
from megatron_acodm.mixing import AioliMixer, StepSignals, build_mixer
from megatron_acodm.mixing.aioli import fit_interactions, normalise
from mixer_states import mixer_args

NAMES = ["prose", "code", "maths"]
BATCH = 8
TOKENS_PER_SAMPLE = 10
# Two interaction matrices, A[j, m]: how much a step of pure domain m lowers domain j's loss.
FIRST = numpy.array([[0.3, 0.1, 0.0], [0.05, 0.4, 0.05], [0.1, 0.1, 0.2]])
SECOND = numpy.array([[0.2, -0.1, 0.0], [0.0, 0.3, 0.1], [0.1, 0.0, 0.1]])
START = numpy.array([5.0, 6.0, 7.0])  # each domain's loss when a sweep starts


def counts_for(weights: numpy.ndarray) -> numpy.ndarray:
    """A batch of BATCH samples that follows the weights (0.75 / 0.125 / 0.125 -> 6, 1, 1)."""
    counts = numpy.floor(weights * BATCH).astype(int)
    counts[numpy.argsort(weights * BATCH - counts)[::-1][: BATCH - counts.sum()]] += 1
    return counts


def law_step(step: int, counts: numpy.ndarray, trained_before: numpy.ndarray, interactions: numpy.ndarray) -> StepSignals:
    """A step whose per-domain loss follows the linear law exactly: START - A C, C the steps of each domain so far."""
    tokens = counts * float(TOKENS_PER_SAMPLE)
    losses = START - interactions @ trained_before
    return StepSignals(step=step, domain_loss_sum=losses * tokens, domain_tokens=tokens, realised_counts=counts,
                       followed_weights=counts / counts.sum())


def test_sweep_fit_recovers_the_interaction_matrix_exactly():
    shares = numpy.array([[6, 1, 1], [6, 1, 1], [1, 6, 1], [1, 6, 1], [1, 1, 6], [1, 1, 6], [3, 3, 2]]) / BATCH
    trained_before = numpy.vstack([numpy.zeros(3), numpy.cumsum(shares[:-1], axis=0)])
    losses = START - trained_before @ FIRST.T
    tokens = shares * BATCH * TOKENS_PER_SAMPLE
    assert numpy.allclose(fit_interactions(losses * tokens, tokens, shares), FIRST, rtol=0, atol=1e-10)
    # a domain missing from a step is fitted on its other steps; one missing from all has a zero row
    tokens[3, 1] = 0.0
    tokens[:, 2] = 0.0
    fitted = fit_interactions(losses * tokens, tokens, shares)
    assert numpy.allclose(fitted[:2], FIRST[:2], rtol=0, atol=1e-10) and numpy.array_equal(fitted[2], numpy.zeros(3))


def test_normalisation_shifts_scales_and_keeps_the_objectives_rows():
    interactions = numpy.array([[1.0, -1.0], [2.0, 0.0]])
    # min -1: shifted to [[2, 0], [3, 1]], sum 6
    assert numpy.allclose(normalise(interactions, numpy.array([0.5, 0.5])), [[2 / 6, 0.0], [3 / 6, 1 / 6]], rtol=1e-15, atol=0)
    # only the first domain is the objective: its row [1, -1] -> [2, 0] / 2, the other row zero
    assert numpy.array_equal(normalise(interactions, numpy.array([1.0, 0.0])), [[1.0, 0.0], [0.0, 0.0]])
    # rows weighted by the objective before the sum: [[0.25, -0.25], [1.5, 0]] -> + 0.25 -> sum 2.25
    expected = numpy.array([[0.5, 0.0], [1.75, 0.25]]) / 2.5
    assert numpy.allclose(normalise(interactions, numpy.array([0.25, 0.75])), expected, rtol=1e-15, atol=0)


def perturbed(domain: int) -> numpy.ndarray:
    weights = numpy.full(3, 0.125)
    weights[domain] = 0.75
    return weights


def test_two_rounds_match_hand_computed_sweeps_and_mixtures():
    mixer = AioliMixer(NAMES, [0.5, 0.25, 0.25], total_steps=20, seed=3, rounds=2, sweeps=1, segment_steps=2,
                       one_hot_factor=0.75, eta=1.0, smoothing=0.5)
    played = []
    trained_before = numpy.zeros(3)
    for step in range(20):
        weights = mixer.weights()
        played.append(weights)
        counts = counts_for(weights)
        offset = step % 10
        if offset == 0:
            trained_before = numpy.zeros(3)  # each sweep fits its own intercepts
        mixer.observe(law_step(step, counts, trained_before, FIRST if step < 10 else SECOND))
        trained_before = trained_before + counts / BATCH

    for round_index, start in ((0, 0), (1, 10)):
        order = numpy.random.default_rng([3, round_index, 0]).permutation(3)
        for segment, domain in enumerate(order):  # two steps on each domain's perturbed mixture
            for step in (start + 2 * segment, start + 2 * segment + 1):
                assert numpy.array_equal(played[step], perturbed(domain))
    # Round 0: the prior (--mixing-prior uniform, not the --data-path weights) until its sweep is measured,
    # the step after the sweep included; then p ~ exp(column sums of A / its sum), A >= 0 here.
    assert numpy.array_equal(played[6], [1 / 3] * 3)
    first = FIRST / FIRST.sum()
    mixture = numpy.exp(first.sum(axis=0)) / numpy.exp(first.sum(axis=0)).sum()
    for step in (7, 8, 9, 16):  # the step after round 1's sweep still plays round 0's mixture
        assert numpy.allclose(played[step], mixture, rtol=1e-9, atol=0)
    # Round 1: A has a negative entry, -0.1: shifted by 0.1, divided by the sum 1.6, then half of it
    # and half of round 0's matrix.
    second = (SECOND + 0.1) / 1.6
    smoothed = 0.5 * second + 0.5 * first
    expected = numpy.exp(smoothed.sum(axis=0)) / numpy.exp(smoothed.sum(axis=0)).sum()
    for step in (17, 18, 19):
        assert numpy.allclose(played[step], expected, rtol=1e-9, atol=0)
    assert expected.argmax() == 1  # code lowers every loss the most


def test_objective_reads_only_its_domains_rows():
    mixer = build("--mixing-objective", "prose", "--aioli-rounds", "1", "--aioli-sweeps", "1", "--aioli-segment-steps", "2", train_iters=20)
    trained_before = numpy.zeros(3)
    for step in range(7):
        counts = counts_for(mixer.weights())
        mixer.observe(law_step(step, counts, trained_before, FIRST))
        trained_before = trained_before + counts / BATCH
    column_sums = FIRST[0] / FIRST[0].sum()  # prose's row [0.3, 0.1, 0]: maths does nothing for it
    assert numpy.allclose(mixer.weights(), numpy.exp(column_sums) / numpy.exp(column_sums).sum(), rtol=1e-9, atol=0)


def test_last_round_keeps_the_remainder():
    mixer = AioliMixer(NAMES, [1 / 3] * 3, total_steps=23, rounds=2, sweeps=1, segment_steps=1)
    assert mixer.round_steps == 11 and mixer.sweep_steps == 3
    sweeping = [step for step in range(23) if mixer.perturbed_domain(step) is not None]
    assert sweeping == [0, 1, 2, 11, 12, 13]  # no third sweep at step 22


def build(*argv: str, train_iters: int = 100) -> AioliMixer:
    return build_mixer("aioli", names=NAMES, initial_weights=[0.5, 0.25, 0.25], domain_tokens=[1e6, 4e6, 9e6],
                       args=mixer_args("--mixer", "aioli", *argv, train_iters=train_iters))


def test_state_of_another_schedule_is_refused():
    state = build().state_dict()
    for other in (build(train_iters=120), build("--aioli-segment-steps", "2")):
        with pytest.raises(UserError, match=r"rounds of 25 steps opening with 6-step sweeps, this run has"):
            other.load_state_dict(state)
    build("--aioli-eta", "0.2", "--seed", "9").load_state_dict(state)  # the step size and the sweep orders may change


def test_one_domain_is_refused():
    with pytest.raises(UserError, match="--mixer aioli needs at least 2 domains"):
        AioliMixer(["prose"], [1.0], total_steps=100)


def test_registry_builds_it_from_the_command_line():
    args = mixer_args("--mixer", "aioli", "--aioli-eta", "0.2", "--aioli-rounds", "4", "--seed", "5", train_iters=100)
    mixer = build_mixer(args.mixer, names=NAMES, initial_weights=[1, 1, 1], args=args)
    assert isinstance(mixer, AioliMixer)
    assert (mixer.eta, mixer.rounds, mixer.round_steps, mixer.seed) == (0.2, 4, 25, 5)
    assert (mixer.sweeps, mixer.segment_steps, mixer.one_hot_factor, mixer.smoothing) == (2, 1, 0.75, 0.1)
    assert math.isclose(mixer.weights().sum(), 1.0)
