"""ADO on hand-made step signals: the power-law fit, the policy against a hand computation, the
warm-up, the minimum probability, its options (what every mixer shares: tests/unit/test_mixer_contract.py)."""

from __future__ import annotations

import math

import numpy
import pytest

from megatron_acodm.errors import UserError
from megatron_acodm.mixing import ADOMixer, StepSignals, build_mixer
from megatron_acodm.mixing.ado import fit_power_law
from mixer_states import mixer_args

NAMES = ["prose", "code"]
PER_STEP = 4  # samples of every step below, two per domain


def law_step(step: int, laws: list, counts=(2, 2), tokens_per_sample: int = 10, followed=(0.5, 0.5)) -> StepSignals:
    """Step `step` (0-based), drawn from the mixture `followed`, whose domain k's loss is laws[k](n),
    n the samples trained on after it."""
    samples = PER_STEP * (step + 1)
    tokens = numpy.array(counts, dtype=float) * tokens_per_sample
    losses = numpy.array([law(samples) for law in laws])
    return StepSignals(step=step, domain_loss_sum=losses * tokens, domain_tokens=tokens, realised_counts=list(counts),
                       followed_weights=followed)


def power(beta: float, alpha: float, eps: float = 0.0):
    return lambda n: eps + beta * n**-alpha


def test_fit_recovers_an_exact_law_and_keeps_the_papers_bound():
    samples = numpy.array([1.0, 4.0, 16.0])
    assert fit_power_law(samples, numpy.array([4.0, 2.0, 1.0])) == pytest.approx((4.0, 0.0, 0.5), rel=1e-12, abs=1e-12)
    # a flat loss: no exponent, so no forecast learning
    assert fit_power_law(samples, numpy.array([5.0, 5.0, 5.0])) == pytest.approx((5.0, 0.0, 0.0), rel=1e-12, abs=1e-12)
    # steeper than the paper's bound: alpha stops at 0.8
    _, _, alpha = fit_power_law(samples, 2.0 * samples**-1.5)
    assert alpha == 0.8
    # an irreducible loss on the grid of eps (here half the smallest loss, 32/64 of it): found exactly
    n = numpy.array([1.0, 4.0, 16.0, 64.0])
    assert fit_power_law(n, 1.0 + 8.0 * n**-0.5) == pytest.approx((8.0, 1.0, 0.5), rel=1e-12)  # losses 9, 5, 3, 2


def test_policy_matches_hand_computed_updates():
    laws = [power(4.0, 0.5), power(2.0, 0.25)]  # eps = 0: each fit is exact
    mixer = ADOMixer(NAMES, [0.9, 0.1], total_steps=10, warmup_fraction=0.0, fit_interval=1,
                     credit_smoothing=0.5, credit_exponent=1.0, policy_smoothing=0.5, min_probability=0.0)
    prior = numpy.array([0.5, 0.5])  # the constructor's prior; the --data-path weights play no part
    # The samples each step drew, 4 a step: not the shares of the weights it followed.
    counts = [(2, 2), (3, 1), (1, 3), (3, 1)]
    weights = []
    for step in range(4):
        weights.append(mixer.weights())
        mixer.observe(law_step(step, laws, counts[step], followed=weights[-1]))
    # Steps 1-3 train on the prior: a law needs three points, the third comes with step 3.
    for played in weights[:3]:
        assert numpy.array_equal(played, prior)

    def speed(n):  # -dL/dn = alpha beta n^-alpha / n
        return numpy.array([0.5 * 4.0 * n**-0.5 / n, 0.25 * 2.0 * n**-0.25 / n])

    # h <- 0.5 c + 0.5 h, c the step's counts over 4, from h = prior:
    # (0.5, 0.5) -> (0.5, 0.5) -> (0.625, 0.375) -> (0.4375, 0.5625)
    credit = numpy.array([0.4375, 0.5625])
    rho3 = prior * credit * speed(12.0)
    rho3 /= rho3.sum()
    pi3 = 0.5 * rho3 + 0.5 * prior
    average3 = (1 - 1 / 4) * prior + rho3 / 4
    assert numpy.allclose(weights[3], pi3, rtol=1e-12, atol=0)
    # step 4 drew (3, 1) while following pi3: the credit moves to 0.5 (0.75, 0.25) + 0.5 (0.4375, 0.5625)
    credit = numpy.array([0.59375, 0.40625])
    assert numpy.allclose(mixer.credit, credit, rtol=1e-15, atol=0)
    rho4 = prior * credit * speed(16.0)
    rho4 /= rho4.sum()
    pi4 = 0.5 * rho4 + 0.5 * average3
    assert numpy.allclose(mixer.weights(), pi4, rtol=1e-12, atol=0)
    assert numpy.allclose(mixer.average, (1 - 1 / 5) * average3 + rho4 / 5, rtol=1e-12, atol=0)


def test_a_domain_with_nothing_left_to_learn_keeps_the_minimum_probability():
    laws = [power(4.0, 0.5), lambda n: 7.0]  # the second domain's loss never moves: speed 0
    mixer = ADOMixer(NAMES, [0.5, 0.5], total_steps=10, warmup_fraction=0.0, fit_interval=1,
                     policy_smoothing=1.0, min_probability=0.05)
    for step in range(3):
        mixer.observe(law_step(step, laws))
    # rho = (1, 0) -> max(rho, 0.05) / sum; gamma2 = 1 plays rho itself
    assert numpy.allclose(mixer.weights(), [1 / 1.05, 0.05 / 1.05], rtol=1e-12, atol=0)


def test_warmup_steps_are_left_out_and_a_point_is_a_blocks_token_weighted_mean():
    laws = [power(4.0, 0.5), power(2.0, 0.25)]
    mixer = ADOMixer(NAMES, [0.5, 0.5], total_steps=10, warmup_fraction=0.3, fit_interval=2)
    counts = [(2, 2)] * 7 + [(4, 0)] + [(2, 2)] * 4  # step 8 holds no code
    moved_at = None
    for step, step_counts in enumerate(counts):
        mixer.observe(law_step(step, laws, step_counts))
        if moved_at is None and not numpy.array_equal(mixer.weights(), [0.5, 0.5]):
            moved_at = step + 1
    # warm-up: steps 1-3; then a point every 2 steps, after steps 5, 7, 9 and 11 (step 12 starts a block).
    # Step s has seen 4 s samples; a point's n is the token-weighted mean of its steps': in the block
    # of steps 8-9 prose had 40 tokens at n = 32 and 20 at n = 36, code only step 9's.
    assert mixer.point_samples == [[18, 18], [26, 26], [pytest.approx((40 * 32 + 20 * 36) / 60, rel=1e-15), 36], [42, 42]]
    assert mixer.block_steps == 1
    # the block of steps 8-9: code's mean is step 9's loss alone (step 8 had no code tokens), prose's is token-weighted
    assert mixer.point_losses[2][1] == pytest.approx(2.0 * 36**-0.25, rel=1e-12)
    assert mixer.point_losses[2][0] == pytest.approx((40 * 4.0 * 32**-0.5 + 20 * 4.0 * 36**-0.5) / 60, rel=1e-12)
    assert moved_at == 9  # the third point of each domain comes with step 9


def test_a_points_samples_are_the_token_weighted_mean_of_its_steps():
    laws = [power(4.0, 0.5), power(2.0, 0.25)]
    mixer = ADOMixer(NAMES, [0.5, 0.5], total_steps=10, warmup_fraction=0.0, fit_interval=3)
    for step, counts in enumerate([(3, 1), (1, 3), (2, 2)]):  # 10 tokens a sample
        mixer.observe(law_step(step, laws, counts))
    # n after each step, its own samples counted: 4, 8, 12. Prose's tokens 30, 10, 20; code's 10, 30, 20.
    prose = (30 * 4 + 10 * 8 + 20 * 12) / 60  # 7.33, not the block's last n, 12
    code = (10 * 4 + 30 * 8 + 20 * 12) / 60  # 8.67
    assert mixer.point_samples == [[pytest.approx(prose, rel=1e-15), pytest.approx(code, rel=1e-15)]]
    # and each domain's loss is the same weighting of its step losses
    prose_loss = (30 * 4.0 * 4**-0.5 + 10 * 4.0 * 8**-0.5 + 20 * 4.0 * 12**-0.5) / 60
    code_loss = (10 * 2.0 * 4**-0.25 + 30 * 2.0 * 8**-0.25 + 20 * 2.0 * 12**-0.25) / 60
    assert mixer.point_losses == [[pytest.approx(prose_loss, rel=1e-14), pytest.approx(code_loss, rel=1e-14)]]


def test_a_block_without_a_domain_gives_it_no_point():
    laws = [power(4.0, 0.5), power(2.0, 0.25)]
    mixer = ADOMixer(NAMES, [0.5, 0.5], total_steps=10, warmup_fraction=0.0, fit_interval=1)
    for step, counts in enumerate([(2, 2), (4, 0), (2, 2), (2, 2)]):
        mixer.observe(law_step(step, laws, counts))
    assert math.isnan(mixer.point_losses[1][1]) and mixer.laws is not None
    for step in range(4, 6):
        mixer.observe(law_step(step, laws))
    assert mixer.laws[1] == pytest.approx((2.0, 0.0, 0.25), rel=1e-9, abs=1e-12)  # fitted on its own points


THREE = ["prose", "code", "maths"]


def build(*argv: str) -> ADOMixer:
    return build_mixer("ado", names=THREE, initial_weights=[0.5, 0.25, 0.25], domain_tokens=[1e6, 4e6, 9e6],
                       args=mixer_args("--mixer", "ado", *argv, train_iters=60))


def test_prior_is_the_mixing_prior_the_natural_distribution_by_default():
    assert numpy.allclose(build().weights(), [1 / 14, 4 / 14, 9 / 14], rtol=1e-14, atol=0)
    assert numpy.array_equal(build("--mixing-prior", "uniform").weights(), [1 / 3] * 3)


def test_a_state_of_the_earlier_format_is_refused():
    mixer = build()
    state = mixer.state_dict()
    assert mixer.point_samples == [] and state["format"] == 2
    # What the earlier ADO saved: one n per point, no block_samples, no format.
    old = {key: value for key, value in state.items() if key not in ("format", "block_samples")}
    with pytest.raises(UserError) as refused:
        build().load_state_dict(dict(old, point_samples=[40, 80, 120], point_losses=[[3.0, 2.0, 1.0]] * 3))
    assert str(refused.value) == (
        "the checkpoint's ADOMixer state has format 1, this version reads format 2 (its credit follows the realised counts "
        "and a fitted point's n its steps); finish that run with the version that wrote it, or start a new one"
    )


def test_registry_builds_it_from_the_command_line():
    args = mixer_args("--mixer", "ado", "--ado-credit-exponent", "1", "--ado-fit-interval", "5", train_iters=100)
    mixer = build_mixer(args.mixer, names=THREE, initial_weights=[1, 1, 1], domain_tokens=[1e6, 4e6, 9e6], args=args)
    assert isinstance(mixer, ADOMixer)
    assert (mixer.credit_exponent, mixer.fit_interval, mixer.warmup_steps) == (1.0, 5, 4)  # ceil(0.0322 x 100)
    assert (mixer.credit_smoothing, mixer.policy_smoothing, mixer.min_probability) == (0.1, 0.1, 0.01)
