"""The alignment signal and the bounded mirror step: the numbers against hand computations, the
half-sketch diagonal's unbiasedness, and the bounds."""

from __future__ import annotations

import numpy
import pytest
import torch

from megatron_acodm.mixing.alignment import AlignmentSignal, MovingAverage, mean_gradient_gram, published_rewards, standardised
from megatron_acodm.mixing.mirror_step import BoundedMirrorStep
from megatron_acodm.mixing.weighting import domain_weighting
from megatron_acodm.errors import UserError
from megatron_acodm.sketch.probes import rank_one_probes
from megatron_acodm.sketch.reference import project_and_segment_sum
from megatron_acodm.sketch.segments import half_segments


def exact_half_gram(mean_gradients: numpy.ndarray, half_tokens: numpy.ndarray) -> numpy.ndarray:
    """The Gram of the halves' summed gradients when every token of a domain has its mean gradient."""
    sums = numpy.repeat(mean_gradients, 2, axis=0) * half_tokens[:, None]
    return sums @ sums.T


def test_half_segments_deal_each_domains_samples_alternately():
    assert half_segments([0, 1, 0, 0, 2, 1, 0]).tolist() == [0, 2, 1, 0, 4, 3, 1]
    assert half_segments([]).tolist() == []


def test_scores_are_mean_gradient_alignments_whatever_the_batch_shares():
    gradients = numpy.array([[1.0, 0.0], [0.6, 0.8], [-0.3, 1.0]])
    objective = numpy.array([0.5, 0.5, 0.0])
    expected_gram = gradients @ gradients.T
    scale = objective @ numpy.diag(expected_gram)
    for tokens in ([10, 10, 10, 10, 10, 10], [300, 200, 7, 9, 40, 41]):  # shares do not matter
        tokens = numpy.array(tokens, dtype=float)
        gram, observed = mean_gradient_gram(exact_half_gram(gradients, tokens), tokens)
        assert observed.all() and numpy.allclose(gram, expected_gram, rtol=1e-12)
        signal = AlignmentSignal(objective, decay=0.5)
        step = signal.observe(exact_half_gram(gradients, tokens), tokens)
        assert numpy.allclose(step, expected_gram @ objective / scale, rtol=1e-12)
        assert numpy.allclose(signal.scores(), step, rtol=1e-12)
    # a domain with one sample has no diagonal; an absent one no entries at all
    tokens = numpy.array([10, 0, 5, 5, 0, 0], dtype=float)
    _, observed = mean_gradient_gram(exact_half_gram(gradients, tokens), tokens)
    assert observed.tolist() == [[False, True, False], [True, True, False], [False, False, False]]


def test_the_half_sketch_diagonal_is_unbiased_and_the_whole_sketch_rewards_noise():
    """Mean over probe seeds and data draws, against the exact squared norm of the mean gradient."""
    rng = numpy.random.default_rng(0)
    inputs, outputs, samples, dim = 6, 5, 8, 64
    signal_x, signal_delta = rng.normal(size=inputs), rng.normal(size=outputs)
    true_gradient = numpy.outer(signal_delta, signal_x) * 0.5  # E[delta x^T] of the draws below
    halves, wholes = [], []
    for draw in range(400):
        # one token per sample; x and delta carry independent zero-mean noise, so E[delta x^T] = true_gradient
        x = torch.from_numpy(signal_x + rng.normal(size=(samples, inputs)))
        delta = torch.from_numpy(0.5 * signal_delta + rng.normal(size=(samples, outputs)))
        u, v = rank_one_probes(draw, 0, 0, (outputs, inputs), dim)
        segments = torch.from_numpy(half_segments(numpy.zeros(samples, dtype=numpy.int64)))
        sketch = project_and_segment_sum(x, delta, u.double(), v.double(), segments, 2).double().numpy()
        tokens = numpy.bincount(segments.numpy(), minlength=2).astype(float)
        gram, _ = mean_gradient_gram(sketch @ sketch.T / dim, tokens)
        halves.append(gram[0, 0])
        whole = sketch.sum(axis=0) / samples
        wholes.append(whole @ whole / dim)
    target = float((true_gradient**2).sum())
    halves, wholes = numpy.array(halves), numpy.array(wholes)
    assert abs(halves.mean() - target) < 3 * halves.std() / numpy.sqrt(len(halves))
    assert wholes.mean() - target > 5 * wholes.std() / numpy.sqrt(len(wholes))  # biased up by tr(Sigma)/n


def test_published_reward_is_the_reference_codes_formula_by_hand():
    # Mean gradients per token of four domains; `legal` is absent from the step (no tokens, a zero row).
    gradients = numpy.array([[1600.0, 0.0], [0.0, 160.0], [480.0, 640.0], [0.0, 0.0]])
    tokens = numpy.array([1.0, 3.0, 2.0, 2.0, 5.0, 5.0, 0.0, 0.0])
    # G[k, j] = <g_k, g_j>: G[0, 1] = 0, G[0, 2] = 1600 * 480 = 768000, G[1, 2] = 160 * 640 = 102400.
    off_diagonal = numpy.array([0 + 768000, 0 + 102400, 768000 + 102400, 0.0])
    # Norms 1600, 160, sqrt(480^2 + 640^2) = 800 and 0: their mean over all four domains, the absent one included.
    mean_norm = (1600 + 160 + 800 + 0) / 4  # 640 (over the three present ones it would be 853.3)
    scores = off_diagonal / (mean_norm + 1e-6)  # about 1200, 160, 1360, 0
    clipped = numpy.array([999.0, scores[1], 999.0, 0.0])  # the clip at 999 binds twice
    centred = clipped - clipped.sum() / 4
    unbiased_std = numpy.sqrt((centred**2).sum() / 3)
    expected = centred / (unbiased_std + 1e-8)  # every |z| < 3: the clamp does not bind here
    reward, present = published_rewards(exact_half_gram(gradients, tokens), tokens)
    assert present.tolist() == [True, True, True, False]
    assert reward == pytest.approx(expected, rel=1e-12)
    assert reward[3] < 0  # the absent domain's zero score is z-scored like the others


def test_the_reward_z_score_is_unbiased_and_clamped_at_three():
    # Ten zeros and one 11: mean 1, unbiased variance (10^2 + 10 * 1^2) / 10 = 11.
    values = numpy.array([0.0] * 10 + [11.0])
    z = standardised(values)
    assert z[-1] == 3.0  # 10 / sqrt(11) = 3.015, clamped
    assert z[:10] == pytest.approx([-1 / (numpy.sqrt(11) + 1e-8)] * 10, rel=1e-12)
    assert standardised(numpy.array([2.0, 2.0, 2.0])).tolist() == [0.0, 0.0, 0.0]  # no spread: the 1e-8 keeps it finite


def test_the_published_signal_returns_every_domains_reward_and_smooths_the_present_ones():
    gradients = numpy.array([[3.0, 4.0], [6.0, 0.0], [0.0, 0.0]])
    tokens = numpy.array([2.0, 2.0, 1.0, 1.0, 0.0, 0.0])
    signal = AlignmentSignal(numpy.full(3, 1 / 3), decay=0.5, score="published")
    reward = signal.observe(exact_half_gram(gradients, tokens), tokens)
    # Scores 18 / m, 18 / m, 0 for any mean norm m: z-scores 1/sqrt(3), 1/sqrt(3), -2/sqrt(3) (up to the 1e-8).
    assert reward == pytest.approx(numpy.array([1.0, 1.0, -2.0]) / numpy.sqrt(3), rel=1e-7)
    assert signal.scores()[:2] == pytest.approx(reward[:2], rel=1e-12) and signal.scores()[2] == 0.0  # absent: not averaged
    with pytest.raises(UserError, match="--acodm-reward published z-scores its reward across the domains: give --data-path two or more"):
        AlignmentSignal(numpy.ones(1), decay=0.5, score="published")


def test_moving_average_is_bias_corrected_with_its_standard_error():
    average = MovingAverage((2,), decay=0.8)
    values = [1.0, 3.0, 2.0, 6.0]
    for value in values:
        average.update(numpy.array([value, 0.0]), numpy.array([True, False]))
    weights = numpy.array([0.8**3, 0.8**2, 0.8, 1.0]) * 0.2
    mean = weights @ values / weights.sum()
    count = weights.sum() ** 2 / (weights**2).sum()
    spread = weights @ (numpy.array(values) - mean) ** 2 / weights.sum()
    assert average.mean[0] == pytest.approx(mean, rel=1e-12)
    assert average.standard_error[0] == pytest.approx(numpy.sqrt(spread / (count - 1)), rel=1e-9)
    assert average.mean[1] == 0.0 and average.standard_error[1] == numpy.inf  # never observed


def test_direction_is_zero_within_one_standard_error_and_full_at_four():
    signal = AlignmentSignal(numpy.full(3, 1 / 3), decay=0.5, score="published")
    signal.average.first[:] = [0.0, 1.0, -1.0]
    signal.average.weight[:] = 1.0
    signal.average.weight_squared[:] = 0.5  # two effective observations
    signal.average.second[:] = signal.average.first**2 + numpy.array([0.25, 0.25, 0.01])  # errors 0.5, 0.5, 0.1
    direction = signal.direction(numpy.full(3, 1 / 3))
    assert direction[0] == 0.0 and direction[1] == pytest.approx(1 / 3) and direction[2] == -1.0


def test_mirror_step_keeps_the_prior_without_signal_and_stays_in_its_bounds():
    prior = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    step = BoundedMirrorStep(prior, pull=0.05, kl_radius=0.1, max_step=0.2)
    assert torch.allclose(step(prior, torch.zeros(3, dtype=torch.float64)), prior, rtol=0, atol=1e-15)
    moved = step(prior, torch.tensor([5.0, 0.0, -5.0], dtype=torch.float64))  # clipped to +-0.2
    expected = torch.softmax(prior.log() + torch.tensor([0.2, 0.0, -0.2], dtype=torch.float64), -1)
    assert torch.allclose(moved, expected, rtol=1e-12)
    weights = prior.clone()
    for _ in range(500):
        weights = step(weights, torch.tensor([0.2, 0.2, -0.2], dtype=torch.float64))
        assert float(step.kl_to_prior(weights)) <= 0.1 + 1e-9
    assert float(step.kl_to_prior(weights)) == pytest.approx(0.1, abs=1e-9)  # held on the ball, not at a corner
    # inside the ball, a steady step's fixed point is the tilt p0 exp(step / pull)
    loose = BoundedMirrorStep(prior, pull=0.05, kl_radius=10.0, max_step=0.2)
    weights, tilt = prior.clone(), torch.tensor([0.01, 0.0, -0.01], dtype=torch.float64)
    for _ in range(2000):
        weights = loose(weights, tilt)
    assert torch.allclose(weights, torch.softmax(prior.log() + tilt / 0.05, -1), rtol=1e-9)


def test_mirror_step_is_differentiable_in_the_step_even_on_the_ball():
    step = BoundedMirrorStep(torch.full((3,), 1 / 3), pull=0.0, kl_radius=0.01, max_step=1.0)
    proposal = torch.tensor([0.5, 0.0, -0.5], dtype=torch.float64, requires_grad=True)
    weights = step(torch.full((3,), 1 / 3, dtype=torch.float64), proposal)
    weights[0].backward()
    assert proposal.grad is not None and proposal.grad[0] > 0


def test_weightings_name_domains_and_refuse_what_a_prior_cannot_be():
    names, data_path, tokens = ["a", "b", "c"], [0.2, 0.2, 0.6], [1.0, 3.0, 4.0]
    assert numpy.allclose(domain_weighting("tokens", "--o", names, data_path, tokens, every_domain=True), [1 / 8, 3 / 8, 1 / 2])
    assert numpy.allclose(domain_weighting("data-path", "--o", names, data_path, tokens, every_domain=True), data_path)
    assert numpy.allclose(domain_weighting("a,c", "--o", names, data_path, tokens, every_domain=False), [0.5, 0, 0.5])
    with pytest.raises(UserError, match="--mixing-prior 'a,c' gives \\['b'\\] no weight"):
        domain_weighting("a,c", "--mixing-prior", names, data_path, tokens, every_domain=True)
    with pytest.raises(UserError, match="no domains \\['d'\\] in --data-path"):
        domain_weighting("a,d", "--mixing-objective", names, data_path, tokens, every_domain=False)
    with pytest.raises(UserError, match="needs each domain's token count"):
        domain_weighting("tokens", "--mixing-objective", names, data_path, None, every_domain=False)
    with pytest.raises(UserError, match="--mixing-objective target: only the alignment signal"):  # e.g. Aioli's objective
        domain_weighting("target", "--mixing-objective", names, data_path, tokens, every_domain=False)
