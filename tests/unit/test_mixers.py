"""The mixer protocol, the registry, the fixed mixers and ODM, on hand-made step signals."""

from __future__ import annotations

import argparse
import math
import warnings

import numpy
import pytest

from megatron_acodm.mixing import (
    DOMAIN_LOSSES,
    ODMMixer,
    StaticMixer,
    StepSignals,
    TemperatureMixer,
    add_mixer_arguments,
    build_mixer,
)
from mixer_states import mixer_args

NAMES = ["prose", "code", "maths"]
INITIAL = [0.5, 0.25, 0.25]
TOKENS = [1e6, 4e6, 9e6]


def signals(step: int, losses: list[float], counts: list[int], tokens_per_sample: int = 50, followed=None) -> StepSignals:
    """A step whose domain k had counts[k] samples of `tokens_per_sample` tokens at mean loss losses[k],
    drawn from the mixture `followed` (default: the counts' shares)."""
    tokens = numpy.array(counts, dtype=float) * tokens_per_sample
    loss_sum = numpy.where(tokens > 0, numpy.array(losses, dtype=float) * tokens, 0.0)
    followed = numpy.array(counts, dtype=float) / sum(counts) if followed is None else followed
    return StepSignals(step=step, domain_loss_sum=loss_sum, domain_tokens=tokens, realised_counts=counts, followed_weights=followed)


# Four steps; `maths` is not sampled in step 1. With K = 3, e_t = min(1/3, sqrt(ln 3 / (3 t))) is
# 1/3 for t <= 3 (sqrt(ln 3 / 9) = 0.349), so the first three policies are uniform and the fourth is not.
HAND_STEPS = [
    ([2.0, 3.0, 1.0], [2, 1, 1]),
    ([1.0, 2.0, math.nan], [3, 1, 0]),
    ([1.5, 1.0, 2.5], [1, 2, 1]),
    ([0.5, 4.0, 1.0], [1, 1, 2]),
]
E4 = math.sqrt(math.log(3) / (3 * 4))


def run_hand_steps(mixer: ODMMixer) -> list[numpy.ndarray]:
    weights = []
    for step, (losses, counts) in enumerate(HAND_STEPS):
        mixer.observe(signals(step, losses, counts, followed=mixer.weights()))
        weights.append(mixer.weights())
    return weights


@pytest.mark.filterwarnings("error")  # an unsampled domain's missing loss is no warning
def test_odm_matches_hand_computed_updates():
    mixer = ODMMixer(NAMES, INITIAL, smoothing=0.5)
    assert numpy.array_equal(mixer.weights(), INITIAL)  # no update yet
    weights = run_hand_steps(mixer)
    for uniform in weights[:3]:
        assert numpy.allclose(uniform, [1 / 3] * 3, rtol=0, atol=1e-15)
    # R starts at 1; each step that samples a domain: R <- 0.5 R + 0.5 exp(L).
    exp = math.exp
    r_prose = 0.5 * (0.5 * (0.5 * (0.5 * 1 + 0.5 * exp(2.0)) + 0.5 * exp(1.0)) + 0.5 * exp(1.5)) + 0.5 * exp(0.5)
    r_code = 0.5 * (0.5 * (0.5 * (0.5 * 1 + 0.5 * exp(3.0)) + 0.5 * exp(2.0)) + 0.5 * exp(1.0)) + 0.5 * exp(4.0)
    r_maths = 0.5 * (0.5 * (0.5 * 1 + 0.5 * exp(1.0)) + 0.5 * exp(2.5)) + 0.5 * exp(1.0)  # not sampled in step 1
    total = r_prose + r_code + r_maths
    expected = [(1 - 3 * E4) * r / total + E4 for r in (r_prose, r_code, r_maths)]
    assert numpy.allclose(weights[3], expected, rtol=1e-12, atol=0)
    assert weights[3][1] > weights[3][2] > weights[3][0]  # the hardest domain gets the most


@pytest.mark.filterwarnings("error")
def test_odm_importance_weighted_matches_hand_computed_updates():
    mixer = ODMMixer(NAMES, INITIAL, smoothing=0.5, importance_weighting=True)
    weights = run_hand_steps(mixer)
    for uniform in weights[:3]:
        assert numpy.allclose(uniform, [1 / 3] * 3, rtol=0, atol=1e-15)
    # R starts at 0; R <- 0.5 R + 0.5 L / pi with pi the step's weights: INITIAL in step 0, then 1/3.
    r_prose = 0.5 * (0.5 * (0.5 * (0.5 * 0 + 0.5 * 2.0 / 0.5) + 0.5 * 1.0 * 3) + 0.5 * 1.5 * 3) + 0.5 * 0.5 * 3
    r_code = 0.5 * (0.5 * (0.5 * (0.5 * 0 + 0.5 * 3.0 / 0.25) + 0.5 * 2.0 * 3) + 0.5 * 1.0 * 3) + 0.5 * 4.0 * 3
    r_maths = 0.5 * (0.5 * (0.5 * 0 + 0.5 * 1.0 / 0.25) + 0.5 * 2.5 * 3) + 0.5 * 1.0 * 3  # not sampled in step 1
    assert (r_prose, r_code, r_maths) == pytest.approx((2.5, 8.25, 3.875), rel=1e-12)
    # pi = (1 - K e_4) softmax(e_3 R) + e_4, with e_3 = 1/3.
    exponentials = [math.exp(r / 3) for r in (r_prose, r_code, r_maths)]
    expected = [(1 - 3 * E4) * x / sum(exponentials) + E4 for x in exponentials]
    assert numpy.allclose(weights[3], expected, rtol=1e-12, atol=0)


def test_odm_warmup_returns_initial_weights_while_rewards_accumulate():
    warm = ODMMixer(NAMES, INITIAL, warmup_steps=4)
    cold = ODMMixer(NAMES, INITIAL)
    assert numpy.array_equal(warm.weights(), numpy.array(INITIAL))  # step 0
    warm_weights, cold_weights = run_hand_steps(warm), run_hand_steps(cold)
    for weights in warm_weights[:3]:  # the weights of steps 1, 2 and 3
        assert numpy.array_equal(weights, numpy.array(INITIAL))
    assert numpy.array_equal(warm_weights[3], cold_weights[3])


def test_odm_survives_losses_that_would_overflow_exp():
    for importance_weighting in (False, True):
        mixer = ODMMixer(NAMES, INITIAL, importance_weighting=importance_weighting)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            for step in range(10):
                mixer.observe(signals(step, [1000.0, 0.0, 30.0], [1, 1, 1]))
        weights = mixer.weights()
        assert numpy.all(numpy.isfinite(weights)) and abs(weights.sum() - 1) <= 1e-12
        assert weights.argmax() == 0 and weights.min() > 0


def test_fixed_mixers_keep_their_weights():
    static = build_mixer("static", names=NAMES, initial_weights=INITIAL, domain_tokens=TOKENS, args=mixer_args())
    for step in range(3):
        static.observe(signals(step, [1.0, 2.0, 3.0], [1, 1, 1]))
    assert numpy.array_equal(static.weights(), INITIAL)
    uniform = build_mixer("uniform", names=NAMES, initial_weights=INITIAL, args=mixer_args("--mixer", "uniform"))
    assert numpy.array_equal(uniform.weights(), [1 / 3] * 3)
    floored = build_mixer("static", names=NAMES, initial_weights=[1, 0, 0], args=mixer_args("--mixing-floor", "0.1"))
    assert numpy.allclose(floored.weights(), [0.8, 0.1, 0.1], rtol=0, atol=1e-15)


def test_temperature_interpolates_from_token_share_to_uniform():
    tokens = numpy.array(TOKENS)
    assert numpy.allclose(TemperatureMixer(NAMES, TOKENS, 1.0).weights(), tokens / tokens.sum(), rtol=1e-14, atol=0)
    assert numpy.allclose(TemperatureMixer(NAMES, TOKENS, 2.0).weights(), [1 / 6, 2 / 6, 3 / 6], rtol=1e-14, atol=0)
    assert numpy.allclose(TemperatureMixer(NAMES, TOKENS, 1e6).weights(), [1 / 3] * 3, rtol=0, atol=1e-5)
    assert numpy.array_equal(TemperatureMixer(NAMES, [5, 0, 5], 0.01).weights(), [0.5, 0.0, 0.5])
    with pytest.raises(ValueError, match="token count"):
        build_mixer("temperature", names=NAMES, initial_weights=INITIAL, domain_tokens=None, args=mixer_args("--mixer", "temperature"))


def test_an_odm_state_of_the_other_reward_is_refused():
    state = ODMMixer(NAMES, INITIAL).state_dict()
    with pytest.raises(ValueError, match="importance-weighting"):
        ODMMixer(NAMES, INITIAL, importance_weighting=True).load_state_dict(state)


def test_non_finite_loss_keeps_the_last_weights_and_warns_once():
    mixer, reference = ODMMixer(NAMES, INITIAL), ODMMixer(NAMES, INITIAL)
    for step in range(5):
        mixer.observe(signals(step, [1.0, 2.0, 3.0], [1, 1, 1]))
        reference.observe(signals(step, [1.0, 2.0, 3.0], [1, 1, 1]))
    before = mixer.weights()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mixer.observe(signals(5, [math.nan, 2.0, 3.0], [1, 1, 1]))
        assert numpy.array_equal(mixer.weights(), before)
        mixer.observe(signals(6, [1.0, math.inf, 3.0], [1, 1, 1]))
        assert numpy.array_equal(mixer.weights(), before)
    assert len(caught) == 1 and "non-finite" in str(caught[0].message) and "prose" in str(caught[0].message)
    # the bad steps left no trace: the next good step lands where a mixer that never saw them does
    mixer.observe(signals(7, [2.0, 1.0, 0.5], [1, 1, 1]))
    reference.observe(signals(5, [2.0, 1.0, 0.5], [1, 1, 1]))
    assert numpy.array_equal(mixer.weights(), reference.weights())


def test_the_registry_builds_a_mixer_with_its_options_from_the_command_line():
    assert ODMMixer.needs == {DOMAIN_LOSSES} and StaticMixer.needs == frozenset()
    odm = build_mixer("odm", names=NAMES, initial_weights=INITIAL, domain_tokens=TOKENS, args=mixer_args("--mixer", "odm", "--odm-smoothing", "0.9"))
    assert type(odm) is ODMMixer and (odm.smoothing, odm.warmup_steps, odm.importance_weighting) == (0.9, 0, False)
    assert mixer_args().mixer == "static"


def test_unknown_mixer_is_refused_with_the_choices(capsys):
    with pytest.raises(SystemExit):
        add_mixer_arguments(argparse.ArgumentParser()).parse_args(["--mixer", "doremi"])
    assert "static" in capsys.readouterr().err
    with pytest.raises(ValueError, match="static, uniform, temperature, odm, acodm"):
        build_mixer("doremi", names=NAMES, initial_weights=INITIAL, args=mixer_args())
