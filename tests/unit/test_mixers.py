"""The mixer protocol, the registry, the fixed mixers and ODM, on hand-made step signals."""

from __future__ import annotations

import argparse
import math
import warnings

import numpy
import pytest

from megatron_acodm.errors import UserError
from megatron_acodm.mixing import (
    DOMAIN_LOSSES,
    ODMMixer,
    StaticMixer,
    StepSignals,
    TemperatureMixer,
    add_mixer_arguments,
    build_mixer,
)
from megatron_acodm.mixing.odm import UPDATES
from mixer_states import assert_decides_alike, mixer_args, through_checkpoint

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


def odm(**options) -> ODMMixer:
    """ODM over NAMES starting from INITIAL, in a 30-step run whose first 3 steps are its warm-up."""
    return ODMMixer(NAMES, INITIAL, total_steps=30, warmup_fraction=0.1, **options)


def warm_up(mixer: ODMMixer) -> None:
    """Iterations 1-3: a hard prose that would pay if warm-up steps were rewarded; the weights stay INITIAL."""
    for step in range(3):
        mixer.observe(signals(step, [9.0, 1.0, 1.0], [2, 1, 1], followed=mixer.weights()))
        assert numpy.array_equal(mixer.weights(), INITIAL)


# EXP3's exploration e_t = min(1/K, sqrt(ln K / (K t))) at the first iterations after the warm-up;
# with K = 3 it is 1/3 until t = 3 (sqrt(ln 3 / 9) = 0.349), the start of e.
E4, E5, E6 = (math.sqrt(math.log(3) / (3 * t)) for t in (4, 5, 6))


@pytest.mark.filterwarnings("error")  # an unsampled domain's missing loss is no warning
def test_odm_paper_update_matches_hand_computed_updates():
    """The default, the paper's Algorithm 1: a moving average (a = 0.9) of the importance-weighted loss."""
    mixer = odm()
    assert (mixer.update, mixer.smoothing, mixer.warmup_steps) == ("exp3-smoothed", 0.9, 3)
    warm_up(mixer)
    exp = math.exp

    # Iteration 4, drawn from INITIAL: R_i = 0.1 L_i / pi_i from R = 0; e' = 1/3, e = e_4.
    mixer.observe(signals(3, [2.0, 3.0, 1.0], [2, 1, 1], followed=[0.5, 0.25, 0.25]))
    assert mixer.rewards.tolist() == pytest.approx([0.1 * 4.0, 0.1 * 12.0, 0.1 * 4.0], rel=1e-15)
    x = [exp(0.4 / 3), exp(1.2 / 3), exp(0.4 / 3)]
    assert numpy.allclose(mixer.weights(), [(1 - 3 * E4) * xi / sum(x) + E4 for xi in x], rtol=1e-12, atol=0)

    # Iteration 5: maths not sampled (its R stays), drawn from a mixture other than the mixer's weights.
    mixer.observe(signals(4, [1.0, 2.0, math.nan], [3, 1, 0], followed=[0.4, 0.4, 0.2]))
    r = [0.9 * 0.4 + 0.1 * 1.0 / 0.4, 0.9 * 1.2 + 0.1 * 2.0 / 0.4, 0.4]  # 0.61, 1.58, 0.4
    assert mixer.rewards.tolist() == pytest.approx(r, rel=1e-15)
    x = [exp(E4 * 0.61), exp(E4 * 1.58), exp(E4 * 0.4)]
    assert numpy.allclose(mixer.weights(), [(1 - 3 * E5) * xi / sum(x) + E5 for xi in x], rtol=1e-12, atol=0)

    # Iteration 6: e' = e_5, e = e_6.
    mixer.observe(signals(5, [1.5, 1.0, 2.5], [1, 2, 1], followed=[0.25, 0.5, 0.25]))
    r = [0.9 * 0.61 + 0.1 * 6.0, 0.9 * 1.58 + 0.1 * 2.0, 0.9 * 0.4 + 0.1 * 10.0]  # 1.149, 1.622, 1.36
    assert mixer.rewards.tolist() == pytest.approx(r, rel=1e-14)
    x = [exp(E5 * 1.149), exp(E5 * 1.622), exp(E5 * 1.36)]
    assert numpy.allclose(mixer.weights(), [(1 - 3 * E6) * xi / sum(x) + E6 for xi in x], rtol=1e-12, atol=0)


@pytest.mark.filterwarnings("error")
def test_odm_exp3_matches_hand_computed_updates():
    mixer = odm(update="exp3")
    assert mixer.update == "exp3" and mixer.warmup_steps == 3
    warm_up(mixer)
    exp = math.exp

    # Iteration 4, drawn from INITIAL: R_i = (L_i / 10) / pi_i from R = 0; e' = 1/3, e = e_4.
    mixer.observe(signals(3, [2.0, 3.0, 1.0], [2, 1, 1], followed=[0.5, 0.25, 0.25]))
    assert mixer.rewards.tolist() == pytest.approx([0.2 / 0.5, 0.3 / 0.25, 0.1 / 0.25], rel=1e-15)  # 0.4, 1.2, 0.4
    x = [exp(0.4 / 3), exp(1.2 / 3), exp(0.4 / 3)]
    assert numpy.allclose(mixer.weights(), [(1 - 3 * E4) * xi / sum(x) + E4 for xi in x], rtol=1e-12, atol=0)

    # Iteration 5: maths not sampled (its R stays), drawn from a mixture other than the mixer's
    # weights, as --min-samples-per-domain makes it: pi is the one followed. e' = e_4, e = e_5.
    mixer.observe(signals(4, [1.0, 2.0, math.nan], [3, 1, 0], followed=[0.4, 0.4, 0.2]))
    r = [0.4 + 0.1 / 0.4, 1.2 + 0.2 / 0.4, 0.4]  # 0.65, 1.7, 0.4
    assert mixer.rewards.tolist() == pytest.approx(r, rel=1e-15)
    x = [exp(E4 * 0.65), exp(E4 * 1.7), exp(E4 * 0.4)]
    assert numpy.allclose(mixer.weights(), [(1 - 3 * E5) * xi / sum(x) + E5 for xi in x], rtol=1e-12, atol=0)

    # Iteration 6: e' = e_5, e = e_6.
    mixer.observe(signals(5, [1.5, 1.0, 2.5], [1, 2, 1], followed=[0.25, 0.5, 0.25]))
    r = [0.65 + 0.15 / 0.25, 1.7 + 0.1 / 0.5, 0.4 + 0.25 / 0.25]  # 1.25, 1.9, 1.4
    assert mixer.rewards.tolist() == pytest.approx(r, rel=1e-14)
    x = [exp(E5 * 1.25), exp(E5 * 1.9), exp(E5 * 1.4)]
    expected = [(1 - 3 * E6) * xi / sum(x) + E6 for xi in x]
    assert numpy.allclose(mixer.weights(), expected, rtol=1e-12, atol=0)
    assert expected[1] > expected[2] > expected[0]  # the largest importance-weighted loss gets the most


@pytest.mark.filterwarnings("error")
def test_odm_smoothed_mean_matches_hand_computed_updates():
    mixer = odm(update="smoothed-mean", smoothing=0.5)
    warm_up(mixer)
    exp = math.exp

    # Iteration 4: R_i <- 0.5 R_i + 0.5 exp(L_i) from R = 0; maths, never sampled, keeps R = 0 and so
    # gets exactly e_4. The mixture followed plays no part.
    mixer.observe(signals(3, [2.0, 3.0, math.nan], [2, 2, 0], followed=[0.5, 0.25, 0.25]))
    r = [0.5 * exp(2.0), 0.5 * exp(3.0), 0.0]
    assert numpy.allclose(mixer.weights(), [(1 - 3 * E4) * ri / sum(r) + E4 for ri in r], rtol=1e-12, atol=0)
    assert mixer.weights()[2] == pytest.approx(E4, rel=1e-15)

    # Iteration 5: every domain sampled.
    mixer.observe(signals(4, [1.0, 2.0, 1.0], [1, 1, 2], followed=[0.3, 0.3, 0.4]))
    r = [0.5 * r[0] + 0.5 * exp(1.0), 0.5 * r[1] + 0.5 * exp(2.0), 0.5 * 0.0 + 0.5 * exp(1.0)]
    assert numpy.allclose(mixer.weights(), [(1 - 3 * E5) * ri / sum(r) + E5 for ri in r], rtol=1e-12, atol=0)

    # Iteration 6: code not sampled, its R stays.
    mixer.observe(signals(5, [0.5, math.nan, 2.5], [2, 0, 2], followed=[0.3, 0.3, 0.4]))
    r = [0.5 * r[0] + 0.5 * exp(0.5), r[1], 0.5 * r[2] + 0.5 * exp(2.5)]
    assert numpy.allclose(mixer.weights(), [(1 - 3 * E6) * ri / sum(r) + E6 for ri in r], rtol=1e-12, atol=0)


def test_odm_survives_losses_that_would_overflow_exp():
    for update in UPDATES:
        mixer = ODMMixer(NAMES, INITIAL, total_steps=30, warmup_fraction=0.0, update=update)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            for step in range(10):
                mixer.observe(signals(step, [1000.0, 0.0, 30.0], [1, 1, 1], followed=mixer.weights()))
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


def test_an_odm_state_goes_through_a_checkpoint_and_decides_as_before():
    original = odm(update="smoothed-mean")
    warm_up(original)
    for step in range(3, 5):  # maths never sampled: its log R is still -inf
        original.observe(signals(step, [2.0, 3.0, math.nan], [2, 2, 0], followed=original.weights()))
    restored = odm(update="smoothed-mean")
    restored.load_state_dict(through_checkpoint(original.state_dict()))
    assert restored.rewards[2] == -math.inf
    assert_decides_alike(original, restored, range(5, 8), lambda step, weights: signals(step, [1.0, 2.0, 1.5], [1, 1, 2], followed=weights))


def test_an_odm_state_of_the_other_update_or_of_the_old_format_is_refused():
    state = through_checkpoint(odm().state_dict())
    with pytest.raises(UserError) as refused:
        odm(update="smoothed-mean").load_state_dict(state)
    assert str(refused.value) == (
        "the ODM state was saved with --odm-update exp3-smoothed, this run has smoothed-mean; resume with --odm-update exp3-smoothed"
    )
    # What the earlier ODM saved: its rewards were a smoothed exp(L) from 1, or a smoothed L / pi.
    old = {"mixer": "ODMMixer", "names": NAMES, "scores": [0.1, 0.2, 0.3], "updates": 4, "importance_weighting": False}
    with pytest.raises(UserError) as refused:
        odm().load_state_dict(old)
    assert str(refused.value) == (
        "the checkpoint's ODMMixer state has format 1, this version reads format 2 (its rewards are the paper's and the "
        "reference code's, no longer a smoothed exp(L) or L / pi); finish that run with the version that wrote it, or start a new one"
    )


def test_non_finite_loss_keeps_the_last_weights_and_warns_once():
    mixer, reference = (ODMMixer(NAMES, INITIAL, total_steps=30, warmup_fraction=0.0) for _ in range(2))
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
    reference.observe(signals(7, [2.0, 1.0, 0.5], [1, 1, 1]))
    assert numpy.array_equal(mixer.weights(), reference.weights())


def test_the_registry_builds_a_mixer_with_its_options_from_the_command_line():
    assert ODMMixer.needs == {DOMAIN_LOSSES} and StaticMixer.needs == frozenset()
    published = build_mixer("odm", names=NAMES, initial_weights=INITIAL, domain_tokens=TOKENS, args=mixer_args("--mixer", "odm"))
    # the paper's defaults: EXP3 on the smoothed importance-weighted loss (a = 0.9), a warm-up of 2% of
    # --train-iters (200), from the token distribution
    assert type(published) is ODMMixer and (published.update, published.smoothing, published.warmup_steps) == ("exp3-smoothed", 0.9, 4)
    assert numpy.allclose(published.weights(), [1 / 14, 4 / 14, 9 / 14], rtol=1e-14, atol=0)
    smoothed = build_mixer("odm", names=NAMES, initial_weights=INITIAL, domain_tokens=TOKENS,
                           args=mixer_args("--mixer", "odm", "--odm-update", "smoothed-mean", "--odm-smoothing", "0.5",
                                           "--odm-warmup-fraction", "0.1"))
    assert (smoothed.update, smoothed.smoothing, smoothed.warmup_steps) == ("smoothed-mean", 0.5, 20)
    assert mixer_args().mixer == "static"


def test_unknown_mixer_is_refused_with_the_choices(capsys):
    with pytest.raises(SystemExit):
        add_mixer_arguments(argparse.ArgumentParser()).parse_args(["--mixer", "doremi"])
    assert "static" in capsys.readouterr().err
    with pytest.raises(ValueError, match="static, uniform, temperature, odm, acodm"):
        build_mixer("doremi", names=NAMES, initial_weights=INITIAL, args=mixer_args())
