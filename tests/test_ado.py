"""ADO on hand-made step signals: the power-law fit, the policy against a hand computation, the
warm-up, the minimum probability, options, state; and both new online baselines (ADO, Aioli) in
real runs of pretrain_acodm.py, resumed from a checkpoint taken mid-run."""

from __future__ import annotations

import argparse
import math
import shutil
import subprocess

import numpy
import pytest

import trainer_runs as runs
from launching import command, environment
from megatron_acodm.errors import UserError
from megatron_acodm.mixing import ADOMixer, StepSignals, add_mixer_arguments, build_mixer
from megatron_acodm.mixing.ado import fit_power_law
from mixer_states import assert_decides_alike, through_checkpoint

NAMES = ["prose", "code"]
PER_STEP = 4  # samples of every step below, two per domain


def law_step(step: int, laws: list, counts=(2, 2), tokens_per_sample: int = 10) -> StepSignals:
    """Step `step` (0-based) whose domain k's loss is laws[k](n), n the samples trained on after it."""
    samples = PER_STEP * (step + 1)
    tokens = numpy.array(counts, dtype=float) * tokens_per_sample
    losses = numpy.array([law(samples) for law in laws])
    return StepSignals(step=step, domain_loss_sum=losses * tokens, domain_tokens=tokens, realised_counts=list(counts))


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
    prior = numpy.array([0.5, 0.5])  # --mixing-prior uniform; the --data-path weights play no part
    weights = []
    for step in range(4):
        weights.append(mixer.weights())
        mixer.observe(law_step(step, laws))
    # Steps 1-3 train on the prior: a law needs three points, the third comes with step 3.
    for played in weights[:3]:
        assert numpy.array_equal(played, prior)

    def speed(n):  # -dL/dn = alpha beta n^-alpha / n
        return numpy.array([0.5 * 4.0 * n**-0.5 / n, 0.25 * 2.0 * n**-0.25 / n])

    credit = prior.copy()  # h <- 0.5 played + 0.5 h: still the prior after three prior steps
    rho3 = prior * credit * speed(12.0)
    rho3 /= rho3.sum()
    pi3 = 0.5 * rho3 + 0.5 * prior
    average3 = (1 - 1 / 4) * prior + rho3 / 4
    assert numpy.allclose(weights[3], pi3, rtol=1e-12, atol=0)
    # step 4 trained on pi3: the credit moves towards it, and the fast-learning domain gains again
    credit = 0.5 * pi3 + 0.5 * credit
    rho4 = prior * credit * speed(16.0)
    rho4 /= rho4.sum()
    pi4 = 0.5 * rho4 + 0.5 * average3
    assert numpy.allclose(mixer.weights(), pi4, rtol=1e-12, atol=0)
    assert pi4[0] > pi3[0] > 0.5
    assert numpy.allclose(mixer.credit, credit, rtol=1e-12, atol=0)
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
    # warm-up: steps 1-3; then a point every 2 steps, after steps 5, 7, 9 and 11 (step 12 starts a block)
    assert mixer.point_samples == [20, 28, 36, 44] and mixer.block_steps == 1
    # the block of steps 8-9: code's mean is step 9's loss alone (step 8 had no code tokens), prose's is token-weighted
    assert mixer.point_losses[2][1] == pytest.approx(2.0 * 36**-0.25, rel=1e-12)
    assert mixer.point_losses[2][0] == pytest.approx((40 * 4.0 * 32**-0.5 + 20 * 4.0 * 36**-0.5) / 60, rel=1e-12)
    assert moved_at == 9  # the third point of each domain comes with step 9


def test_a_block_without_a_domain_gives_it_no_point():
    laws = [power(4.0, 0.5), power(2.0, 0.25)]
    mixer = ADOMixer(NAMES, [0.5, 0.5], total_steps=10, warmup_fraction=0.0, fit_interval=1)
    for step, counts in enumerate([(2, 2), (4, 0), (2, 2), (2, 2)]):
        mixer.observe(law_step(step, laws, counts))
    assert math.isnan(mixer.point_losses[1][1]) and mixer.laws is not None
    for step in range(4, 6):
        mixer.observe(law_step(step, laws))
    assert mixer.laws[1] == pytest.approx((2.0, 0.0, 0.25), rel=1e-9, abs=1e-12)  # fitted on its own points


def random_step(rng: numpy.random.Generator, step: int, weights: numpy.ndarray) -> StepSignals:
    counts = rng.multinomial(16, weights)
    tokens = counts * float(rng.integers(1, 100))
    losses = 3.0 + 4.0 * (step + 1) ** -0.3 * numpy.linspace(0.5, 1.5, len(weights)) + rng.normal(0.0, 0.05, len(weights))
    return StepSignals(step=step, domain_loss_sum=losses * tokens, domain_tokens=tokens, realised_counts=counts)


THREE = ["prose", "code", "maths"]
RUN = dict(train_iters=60, ado_fit_interval=3)


def build(**options) -> ADOMixer:
    return build_mixer("ado", names=THREE, initial_weights=[0.5, 0.25, 0.25], domain_tokens=[1e6, 4e6, 9e6],
                       args=argparse.Namespace(**{**RUN, **options}))


@pytest.mark.parametrize("options", [{}, {"mixing_floor": 0.05}, {"mixing_prior": "tokens", "ado_min_probability": 0.2}])
def test_weights_stay_on_the_simplex_above_the_floor(options):
    mixer = build(**options)
    rng = numpy.random.default_rng(0)
    for step in range(60):
        weights = mixer.weights()
        assert weights.dtype == numpy.float64 and abs(weights.sum() - 1.0) <= 1e-12
        assert numpy.all(weights >= options.get("mixing_floor", 0.0))
        mixer.observe(random_step(rng, step, weights))
    assert mixer.laws is not None and numpy.ptp(mixer.weights()) > 0.01  # it moved


def test_prior_is_the_mixing_prior():
    assert numpy.allclose(build(mixing_prior="tokens").weights(), [1 / 14, 4 / 14, 9 / 14], rtol=1e-14, atol=0)
    assert numpy.array_equal(build().weights(), [1 / 3] * 3)


def test_state_round_trips_through_a_checkpoint_mid_block():
    rng = numpy.random.default_rng(1)
    original = build()
    for step in range(20):  # warm-up 6 steps, then blocks of 3: step 20 is inside a block
        original.observe(random_step(rng, step, original.weights()))
    assert original.block_steps == 2 and original.laws is not None
    restored = build()
    restored.load_state_dict(through_checkpoint(original.state_dict()))
    assert_decides_alike(original, restored, range(20, 60), lambda step, weights: random_step(rng, step, weights))


@pytest.mark.parametrize(
    "options, message",
    [
        ({"ado_warmup_fraction": 1.0}, "--ado-warmup-fraction must be in [0, 1), got 1.0"),
        ({"ado_fit_interval": 0}, "--ado-fit-interval must be >= 1 step, got 0"),
        ({"ado_credit_smoothing": 0.0}, "--ado-credit-smoothing must be in (0, 1], got 0.0"),
        ({"ado_credit_exponent": -1.0}, "--ado-credit-exponent must be >= 0, got -1.0"),
        ({"ado_policy_smoothing": 1.5}, "--ado-policy-smoothing must be in [0, 1], got 1.5"),
        ({"ado_min_probability": 0.5}, "--ado-min-probability must be in [0, 1/K] = [0, 0.3333] for 3 domains, got 0.5"),
        ({"train_iters": None}, "--mixer ado needs --train-iters"),
        ({"mixing_prior": "maths"}, "every domain needs a positive prior weight"),
    ],
)
def test_bad_options_are_refused_in_one_line(options, message):
    with pytest.raises(UserError) as raised:
        build(**options)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_registry_builds_it_from_the_command_line():
    args = add_mixer_arguments(argparse.ArgumentParser()).parse_args(
        ["--mixer", "ado", "--ado-credit-exponent", "1", "--ado-fit-interval", "5"]
    )
    args.train_iters = 100
    mixer = build_mixer(args.mixer, names=THREE, initial_weights=[1, 1, 1], args=args)
    assert isinstance(mixer, ADOMixer)
    assert (mixer.credit_exponent, mixer.fit_interval, mixer.warmup_steps) == (1.0, 5, 10)
    assert (mixer.credit_smoothing, mixer.policy_smoothing, mixer.min_probability) == (0.1, 0.1, 0.01)


# ------------------------------------------------------------------------------------------ real runs

# Twelve steps at the tiny model; each mixer's schedule shrunk so that it moves within them, and the
# checkpoint after step 8 falls where it holds state in flight (ADO: points; Aioli: inside its second sweep).
RESUMED_RUNS = {
    "ado": ["--ado-fit-interval", "1", "--ado-warmup-fraction", "0.1"],
    "aioli": ["--aioli-rounds", "2", "--aioli-sweeps", "1", "--aioli-segment-steps", "1"],
}


def train_side_by_side(folder, argument_lists) -> None:
    """Run pretrain_acodm.py once per argument list, all at once; fail with a run's output if one fails."""
    processes = []
    for index, arguments in enumerate(argument_lists):
        log = open(folder / f"run{index}.log", "w")
        processes.append((subprocess.Popen(command(runs.ENTRY, arguments), cwd=str(folder), env=environment(),
                                           stdout=log, stderr=subprocess.STDOUT), log, index))
    for process, log, index in processes:
        try:
            code = process.wait(timeout=300)
        finally:
            log.close()
        assert code == 0, (folder / f"run{index}.log").read_text()[-3000:]


def test_runs_resumed_from_a_checkpoint_repeat_the_runs_that_made_it(tmp_path, preprocessed_corpus, tokenizer_model):
    """Each mixer trains 12 steps saving every 4; a copy resumes from the checkpoint of step 8 and
    must log steps 9-12 exactly as the run that never stopped (the metrics file keeps steps 1-8)."""
    def arguments(mixer: str, save: str) -> list[str]:
        return runs.arguments(preprocessed_corpus, tokenizer_model, save, "--train-iters", "12", "--save-interval", "4",
                              "--mixer", mixer, *RESUMED_RUNS[mixer])

    saves = {mixer: tmp_path / mixer for mixer in RESUMED_RUNS}
    resumed = {mixer: tmp_path / f"{mixer}-resumed" for mixer in RESUMED_RUNS}
    train_side_by_side(tmp_path, [arguments(mixer, str(saves[mixer])) for mixer in RESUMED_RUNS])
    for mixer in RESUMED_RUNS:
        shutil.copytree(saves[mixer], resumed[mixer])
        (resumed[mixer] / "latest_checkpointed_iteration.txt").write_text("8")
    train_side_by_side(tmp_path, [arguments(mixer, str(resumed[mixer])) + ["--load", str(resumed[mixer])] for mixer in RESUMED_RUNS])

    for mixer in RESUMED_RUNS:
        (expected, expected_valid, expected_records), (got, got_valid, got_records) = (
            runs.losses(str(saves[mixer])), runs.losses(str(resumed[mixer])))
        assert len(got) == 12 and got == expected and got_valid == expected_valid, mixer
        assert [record["domains"] for record in got_records] == [record["domains"] for record in expected_records], mixer
        weights = numpy.array([[domain["weight"] for domain in record["domains"].values()] for record in expected_records])
        assert numpy.ptp(weights[8:], axis=0).max() > 1e-3, f"{mixer}'s weights never moved after the resume"
