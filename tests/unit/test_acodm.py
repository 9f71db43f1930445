"""AC-ODM: the published method's parts against hand computations (its state, exploration, warm-up
teacher, learning-rate schedule, the actor the reference never trains), our bounded variant in closed
loops (no signal, noise, an interior optimum, a harmful domain), the DDPG agent, proxy export/import
(what every mixer shares, exact resume included: tests/unit/test_mixer_contract.py)."""

from __future__ import annotations

import argparse
import copy
import math
import warnings

import numpy
import pytest
import torch

from megatron_acodm.data.apportion import apportion
from megatron_acodm.errors import UserError
from megatron_acodm.mixing import (
    DOMAIN_LOSSES,
    GRADIENT_GRAM,
    LAYER_DRIFTS,
    LAYER_NORMS,
    ACODMMixer,
    StepSignals,
    build_mixer,
    layers_at_depths,
)
from megatron_acodm.mixing.acodm import PolicyError
from megatron_acodm.mixing.acodm.ddpg import DDPGAgent, DDPGConfig, Transitions, learning_rate
from megatron_acodm.mixing.acodm.features import FeatureSpec, StateBuilder, StepView
from megatron_acodm.mixing.acodm.memory import SignalMemory
from megatron_acodm.mixing.acodm.networks import NetworkConfig
from megatron_acodm.mixing.acodm.policy import POLICY_FORMAT, load_policy
from megatron_acodm.sketch.segments import half_segments
from mixer_states import mixer_args

NAMES = ["prose", "code", "maths"]
INITIAL = [0.5, 0.25, 0.25]
DEPTHS = (0.25, 0.5, 0.75, 1.0)
NORMS = numpy.array([10.0, 11.0, 12.5, 14.0])


class QuadraticDomains:
    """A closed loop that runs in milliseconds: parameters theta in R^2, domain k's per-sample loss
    `|theta - c_k|^2 / 2` with per-sample gradient `theta - c_k + noise`, one SGD step per global
    batch on the mixture the mixer chose. The half Gram is exact (no sketch), from the samples'
    own gradients dealt into halves as the trainer deals them."""

    def __init__(self, centres, noise: float = 0.5, batch: int = 32, lr: float = 0.1, seed: int = 0):
        self.centres = numpy.asarray(centres, dtype=float)
        self.noise, self.batch, self.lr = noise, batch, lr
        self.rng = numpy.random.default_rng(seed)
        self.theta = numpy.zeros(self.centres.shape[1])
        self.carry = numpy.zeros(len(self.centres))

    def losses(self) -> numpy.ndarray:
        return 0.5 * ((self.theta - self.centres) ** 2).sum(axis=1)

    def step(self, step: int, weights: numpy.ndarray, gradient_scale: float = 1.0) -> StepSignals:
        counts, self.carry = apportion(self.carry, weights, self.batch)
        domains = numpy.repeat(numpy.arange(len(counts)), counts)
        gradients = self.theta - self.centres[domains] + self.noise * self.rng.normal(size=(len(domains), self.theta.size))
        segments = half_segments(domains)
        sums = numpy.zeros((2 * len(counts), self.theta.size))
        numpy.add.at(sums, segments, gradient_scale * gradients)
        tokens = numpy.bincount(segments, minlength=2 * len(counts)).astype(float)
        losses = self.losses()
        self.theta = self.theta - self.lr * gradients.mean(axis=0)
        return StepSignals(
            step=step,
            domain_loss_sum=losses * counts,
            domain_tokens=counts.astype(float),
            realised_counts=counts,
            followed_weights=weights,
            half_gram=sums @ sums.T,
            half_tokens=tokens,
            layer_weight_norms=NORMS * (1.0 + 0.001 * step),
        )


TRIANGLE = [[1.0, 0.0], [-0.5, 0.87], [-0.5, -0.87]]


def make_mixer(total_steps: int = 400, seed: int = 7, names=NAMES, **options) -> ACODMMixer:
    """Our bounded variant with a trained actor and the alignment reward, small networks and a
    constant learning rate after a short warm-up (the closed loops below run in seconds), and the
    bounds these loops were written for: a largest step of 0.1, a pull of 0.02, a KL radius of 0.25."""
    config = DDPGConfig(gamma=0.0, lr=1e-3, min_lr=1e-3, lr_warmup_updates=10, total_updates=total_steps, weight_decay=0.0)
    defaults = dict(
        action="bounded", train_actor=True, score="alignment", config=config, hidden=64, depth=2, layer_depths=DEPTHS,
        warmup_fraction=0.1, max_step=0.1, pull=0.02, kl_radius=0.25,
    )
    return ACODMMixer(names, [1.0] * len(names), total_steps=total_steps, seed=seed, **{**defaults, **options})


def run(mixer: ACODMMixer, problem: QuadraticDomains, steps: range) -> list[numpy.ndarray]:
    """Train `steps` steps of `problem` on the mixer's weights; the weights after each step."""
    weights = []
    for step in steps:
        mixer.observe(problem.step(step, mixer.weights()))
        weights.append(mixer.weights())
    return weights


def effective_domains(weights: numpy.ndarray) -> float:
    return float(numpy.exp(-(weights * numpy.log(weights)).sum()))


def parameters(module: torch.nn.Module) -> list[torch.Tensor]:
    return [parameter.detach().clone() for parameter in module.parameters()]


def moved(before: list[torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(old, new) for old, new in zip(before, module.parameters()))


def test_no_signal_keeps_the_prior_up_to_rounding():
    prior = numpy.array([0.5, 0.3, 0.2])
    mixer = make_mixer(prior=prior)
    problem = QuadraticDomains(TRIANGLE)
    for step in range(100):
        signals = problem.step(step, mixer.weights(), gradient_scale=0.0)  # a zero Gram matrix
        mixer.observe(signals)
        assert numpy.allclose(mixer.weights(), prior, rtol=0, atol=1e-14)


def test_pure_noise_gradients_leave_the_weights_near_the_prior():
    # every domain the same centre: the per-domain scores differ only by noise
    mixer, problem = make_mixer(), QuadraticDomains([[0.0, 0.0]] * 3, noise=2.0)
    weights = run(mixer, problem, range(400))
    worst = max(float(numpy.abs(numpy.log(w * 3)).max()) for w in weights)
    assert worst < 0.25, worst  # within about 25% of 1/3 at every step
    assert min(effective_domains(w) for w in weights) > 2.95


def test_an_interior_optimum_is_reached_not_a_corner():
    # the uniform-mean loss over the triangle's corners is least at the centre: uniform weights;
    # start far from it, with no pull back to the prior and a wide ball
    start = numpy.array([0.7, 0.2, 0.1])
    mixer = make_mixer(prior=start, pull=0.0, kl_radius=5.0)
    problem = QuadraticDomains(TRIANGLE, noise=0.5)
    weights = run(mixer, problem, range(600))
    final = numpy.mean(weights[-100:], axis=0)
    uniform = numpy.full(3, 1 / 3)
    assert numpy.abs(final - uniform).sum() < 0.25 * numpy.abs(start - uniform).sum(), final
    assert min(effective_domains(w) for w in weights) > 2.0  # never near a corner


def test_a_harmful_domain_is_starved_and_the_objective_domains_kept():
    # `maths` pulls theta away from where the objective's domains (prose, code) are learned
    centres = [[1.0, 0.0], [0.8, 0.3], [-3.0, 0.0]]
    mixer = make_mixer(objective=numpy.array([0.5, 0.5, 0.0]))
    problem = QuadraticDomains(centres, noise=0.5)
    weights = run(mixer, problem, range(300))
    assert numpy.mean([w[2] for w in weights[100:]]) < 0.5 / 3
    assert min(effective_domains(w) for w in weights) >= 3 * math.exp(-0.25) - 1e-9  # the KL ball's bound
    uniform_problem = QuadraticDomains(centres, noise=0.5)
    for step in range(300):
        uniform_problem.step(step, numpy.full(3, 1 / 3))
    assert problem.losses()[:2].mean() < uniform_problem.losses()[:2].mean()


def test_the_actor_learns_to_follow_a_consistent_signal_further():
    centres = [[1.0, 0.0], [0.8, 0.3], [-3.0, 0.0]]
    mixer = make_mixer(total_steps=300, objective=numpy.array([0.5, 0.5, 0.0]))
    problem = QuadraticDomains(centres, noise=0.5)
    states = []
    initial_actor = copy.deepcopy(mixer.agent.actor)
    for step in range(300):
        mixer.observe(problem.step(step, mixer.weights()))
        states.append(mixer.last_state)
    states = torch.tensor(numpy.array(states[100:]), dtype=torch.float32)
    with torch.no_grad():
        before = torch.sigmoid(initial_actor(states))[:, 2].mean()
        after = torch.sigmoid(mixer.agent.actor(states))[:, 2].mean()
    assert after > before + 0.05, (float(before), float(after))  # it steps harder away from `maths`


def test_state_layout_is_scale_free_and_absent_domains_age():
    spec = FeatureSpec(3, DEPTHS, layout="scale-free")
    assert spec.state_dim == 6 * 3 + 2 * 4 + 1 == sum(size for _, size in spec.blocks)
    assert spec.block("weight") == slice(6, 9) and spec.block("direction") == slice(12, 15)
    assert layers_at_depths(DEPTHS, 2) == [0, 0, 1, 1]
    assert layers_at_depths(DEPTHS, 4) == [0, 1, 2, 3]
    assert layers_at_depths(DEPTHS, 1) == [0, 0, 0, 0]

    def states(loss_scale: float, norm_scale: float) -> list[numpy.ndarray]:
        memory, builder = SignalMemory(3, spec.stale_decay), StateBuilder(spec, total_steps=10)
        result = []
        for step, counts in enumerate(([4, 2, 2], [4, 4, 0], [4, 4, 0])):
            counts = numpy.array(counts, dtype=float)
            memory.update(counts > 0, loss_scale * numpy.array([3.0, 2.0, 4.0 + step]) / (step + 1))
            weights, direction, snr = counts / 8, numpy.array([0.5, 0.0, -0.5]), numpy.array([1.0, 0.0, 3.0])
            norms = norm_scale * numpy.array([1.0, 2.0, 3.0, 4.0 + step])
            result.append(builder.state(StepView(memory, step, norms, counts, weights=weights, direction=direction, snr=snr)))
        return result

    base, scaled = states(1.0, 1.0), states(7.0, 50.0)
    for one, other in zip(base, scaled):
        assert one.shape == (spec.state_dim,)
        assert numpy.allclose(one, other, rtol=0, atol=1e-12)  # bigger losses, wider model: the same state
    assert numpy.array_equal(base[0][spec.block("score_snr")], [0.5, 0.0, 0.75])
    staleness = spec.block("staleness")
    assert numpy.array_equal(base[0][staleness], [0.0, 0.0, 0.0])
    assert numpy.allclose(base[2][staleness], [0.0, 0.0, 1.0 - spec.stale_decay**2], rtol=1e-15, atol=0)
    # `maths` was absent from steps 1 and 2: its loss is held at step 0's, so its log-ratio stays 0
    assert base[2][3 + 2] == 0.0 and base[2][-1] == pytest.approx(0.3)


def filled_mixer(steps: int = 60) -> ACODMMixer:
    mixer = make_mixer(total_steps=steps, warmup_fraction=0.0)
    run(mixer, QuadraticDomains(TRIANGLE), range(steps))
    return mixer


def test_ddpg_update_moves_the_actor_and_raises_q_on_the_batch():
    ddpg = filled_mixer().agent
    replay = torch.Generator()
    replay.set_state(ddpg.generator.get_state())
    batch_states = ddpg.buffer.states[torch.randperm(ddpg.buffer.size, generator=replay)[: ddpg.config.batch_size]]
    actor_before = copy.deepcopy(ddpg.actor)
    ddpg.update(train_actor=True)
    assert moved(parameters(actor_before), ddpg.actor)
    with torch.no_grad():
        q_before = ddpg.critic(batch_states, ddpg._action(actor_before, batch_states)).mean()
        q_after = ddpg.critic(batch_states, ddpg._action(ddpg.actor, batch_states)).mean()
    assert q_after > q_before


def test_the_actor_optimizer_updates_the_actor_even_with_the_critic_frozen():
    ddpg = filled_mixer().agent
    actor_ids = {id(parameter) for parameter in ddpg.actor.parameters()}
    assert {id(p) for group in ddpg.actor_optimizer.param_groups for p in group["params"]} == actor_ids
    ddpg.critic_optimizer.step = lambda *args, **kwargs: None  # the reference code's only step
    actor_before, critic_before = parameters(ddpg.actor), parameters(ddpg.critic)
    ddpg.update(train_actor=True)
    assert moved(actor_before, ddpg.actor)
    assert not moved(critic_before, ddpg.critic)


def test_only_the_critic_learns_during_the_warmup_and_its_fit_is_measured():
    total, warmup = 200, 40
    mixer = make_mixer(total_steps=total, warmup_fraction=warmup / total)
    problem = QuadraticDomains(TRIANGLE)
    actor, critic = parameters(mixer.agent.actor), parameters(mixer.agent.critic)
    run(mixer, problem, range(warmup))
    assert not moved(actor, mixer.agent.actor) and moved(critic, mixer.agent.critic)
    assert math.isfinite(mixer.scalar_diagnostics()["critic_fit"])
    run(mixer, problem, range(warmup, warmup + 5))
    assert moved(actor, mixer.agent.actor)


def test_non_finite_signal_keeps_the_last_weights_and_warns_once():
    mixer, reference = make_mixer(), make_mixer()
    problem, reference_problem = QuadraticDomains(TRIANGLE), QuadraticDomains(TRIANGLE)
    run(mixer, problem, range(10))
    run(reference, reference_problem, range(10))
    before = mixer.weights()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bad = problem.step(10, before)
        bad.half_gram[0, 2] = numpy.nan
        mixer.observe(bad)
        assert numpy.array_equal(mixer.weights(), before)
        bad = problem.step(11, before)
        bad.layer_weight_norms[1] = math.inf
        mixer.observe(bad)
        bad = problem.step(12, before)
        bad.domain_loss_sum[1] = numpy.nan
        mixer.observe(bad)
        assert numpy.array_equal(mixer.weights(), before)
    assert len(caught) == 1 and "non-finite half_gram" in str(caught[0].message)
    # the bad steps left no trace in the mixer
    for step in range(10, 13):
        reference_problem.step(step, before)
    signals = problem.step(13, before)
    mixer.observe(signals)
    reference.observe(signals)
    assert numpy.array_equal(mixer.weights(), reference.weights())


@pytest.mark.parametrize("saved", [1, 2, 3])
def test_a_state_of_an_earlier_format_is_refused_with_what_to_do(saved):
    state = dict(make_mixer().state_dict(), format=saved)
    if saved == 1:
        del state["format"]  # as the actor that chose the weights itself saved it
    with pytest.raises(UserError, match=f"state has format {saved}, this version reads format 4 \\(its default is the reference's method.*start a new one"):
        make_mixer().load_state_dict(state)


def test_the_published_critic_regresses_each_domain_on_its_own_target():
    """A batch of two transitions with K = 2 reward components, the networks made constant: the
    target Q' = c and the online Q = b whatever the input (hidden layers zero, so only the output
    bias is left)."""
    network = NetworkConfig(state_dim=3, num_domains=2, hidden=4, depth=1)
    agent = DDPGAgent(network, DDPGConfig(gamma=0.5), torch.Generator().manual_seed(0), lambda states, outputs: torch.softmax(outputs, -1), (2,))
    for critic, bias in ((agent.target_critic, [1.0, -2.0]), (agent.critic, [0.5, 0.5])):
        with torch.no_grad():
            for parameter in critic.parameters():
                parameter.zero_()
            critic.network[-1].bias.copy_(torch.tensor(bias))
    batch = Transitions(
        states=torch.zeros(2, 3), actions=torch.full((2, 2), 0.5), rewards=torch.tensor([[1.0, 0.0], [0.0, 2.0]]), next_states=torch.ones(2, 3)
    )
    # y = r + gamma c = [[1 + 0.5, 0 - 1], [0 + 0.5, 2 - 1]]; Q - y = [[-1, 1.5], [0, -0.5]]: mean square 3.5 / 4.
    assert agent._targets(batch.rewards, batch.next_states).tolist() == [[1.5, -1.0], [0.5, 1.0]]
    assert agent._improve_actor(batch) == pytest.approx(-0.5)  # -mean Q over the batch and the domains
    assert agent._update_critic(batch) == pytest.approx(0.875, rel=1e-6)


def test_the_published_reward_is_stored_per_domain():
    mixer = make_mixer(score="published")
    run(mixer, QuadraticDomains(TRIANGLE), range(6))
    assert mixer.agent.buffer.size == 5 and mixer.agent.buffer.rewards.shape == (mixer.agent.config.buffer_size, 3)
    stored = mixer.agent.buffer.rewards[:5]
    assert torch.allclose(stored.sum(dim=1), torch.zeros(5), atol=1e-5)  # z-scores across the domains: mean zero
    assert torch.allclose(stored.std(dim=1), torch.ones(5), atol=1e-5)  # and unbiased std one (no |z| reaches 3 with K = 3)
    assert mixer.agent.critic(mixer.agent.buffer.states[:5], mixer.agent.buffer.actions[:5]).shape == (5, 3)
    assert math.isfinite(mixer.scalar_diagnostics()["critic_fit"])


def test_same_seed_and_signals_give_identical_weights_on_every_rank():
    ranks = [make_mixer(seed=5) for _ in range(2)]
    other_seed = make_mixer(seed=6)
    problem = QuadraticDomains([[1.0, 0.0], [0.8, 0.3], [-3.0, 0.0]])
    for step in range(80):
        signals = problem.step(step, ranks[0].weights())
        for mixer in (*ranks, other_seed):
            mixer.observe(signals)
        assert numpy.array_equal(ranks[0].weights(), ranks[1].weights())
    assert not numpy.array_equal(ranks[0].weights(), other_seed.weights())


def acodm_args(*argv: str) -> argparse.Namespace:
    """A run's options for --mixer acodm, with the trainer's --train-iters 200."""
    return mixer_args("--mixer", "acodm", *argv)


TOKENS = [600.0, 300.0, 100.0]  # the domains' token counts: the published start is their mixture


def build_acodm(*argv: str, **kwargs) -> ACODMMixer:
    return build_mixer("acodm", names=NAMES, initial_weights=INITIAL, domain_tokens=TOKENS, args=acodm_args(*argv, **kwargs))


def test_exported_policy_reproduces_the_actor_and_drives_a_deeper_target(tmp_path):
    proxy = make_mixer(total_steps=200, warmup_fraction=0.0)
    run(proxy, QuadraticDomains(TRIANGLE), range(60))
    path = str(tmp_path / "policy.pt")
    proxy.export_policy(path)
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary file was renamed over the target

    policy = load_policy(path, NAMES, "alignment")
    for state in list(proxy.agent.buffer.states[:20].double().numpy()):
        expected = proxy.action_map(torch.from_numpy(state), proxy.agent.outputs(state))
        assert numpy.array_equal(policy.act(state, proxy.action_map), expected.numpy())

    # A 4-layer target of another width reads its own state with the proxy's relative depths.
    options = ("--acodm-policy", path, "--acodm-action", "bounded", "--acodm-reward", "alignment")
    target = build_acodm(*options)
    assert target.agent is None and target.norm_layer_depths == DEPTHS and target.warmup_steps == 0
    assert target.needs == ACODMMixer.needs == {DOMAIN_LOSSES, GRADIENT_GRAM, LAYER_NORMS}  # its own signal
    problem = QuadraticDomains([[1.0, 0.0], [0.8, 0.3], [-3.0, 0.0]])
    for step in range(40):
        signals = problem.step(step, target.weights())
        signals.layer_weight_norms = signals.layer_weight_norms * 40.0  # a wider model
        target.observe(signals)
        weights = target.weights()
        assert numpy.all(numpy.isfinite(weights)) and abs(weights.sum() - 1.0) <= 1e-12
        assert numpy.array_equal(weights, policy.act(target.last_state, target.action_map))  # no noise

    with pytest.raises(ValueError, match="differs from the policy's"):
        build_acodm(*options, "--acodm-feature-depths", "0.5,1.0")
    with pytest.raises(UserError, match="the policy's actor was trained with --acodm-action bounded, this run has softmax; "
                       "give this run --acodm-action bounded"):
        build_acodm("--acodm-policy", path, "--acodm-reward", "alignment")


def test_policy_for_other_domains_or_a_damaged_file_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "policy.pt"
    make_mixer(total_steps=50).export_policy(str(path))
    for names in (["prose", "code", "legal"], ["code", "prose", "maths"]):
        with pytest.raises(PolicyError, match=f"{path}.*same domains in the same order"):
            load_policy(str(path), names, "alignment")

    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(path.read_bytes()[:200])
    with pytest.raises(PolicyError, match=f"{corrupt}: not a readable AC-ODM policy.*--acodm-export-policy"):
        load_policy(str(corrupt), NAMES, "alignment")
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(PolicyError, match=f"{other}: not an AC-ODM policy file"):
        load_policy(str(other), NAMES, "alignment")
    old = tmp_path / "old.pt"
    for version in (1, 2, 3):  # 3's spec did not name its layout, and its default action is no longer this program's
        torch.save({"format": POLICY_FORMAT, "version": version, "domains": NAMES}, old)
        with pytest.raises(PolicyError, match=f"{old}: policy format version {version}, this program reads version 4"):
            load_policy(str(old), NAMES, "alignment")
    with pytest.raises(PolicyError, match=f"{path}: the policy was trained with --acodm-reward alignment, this run has published; "
                       "give this run --acodm-reward alignment, or train its own policy"):
        load_policy(str(path), NAMES, "published")
    damaged = tmp_path / "damaged.pt"
    payload = torch.load(path, weights_only=True)
    payload["feature_spec"]["state_dim"] = 7
    torch.save(payload, damaged)
    with pytest.raises(PolicyError, match=f"{damaged}: a damaged AC-ODM policy"):
        load_policy(str(damaged), NAMES, "alignment")
    with pytest.raises(PolicyError, match="no such policy file"):
        load_policy(str(tmp_path / "missing.pt"), NAMES, "alignment")


def test_registry_builds_the_published_method_by_default_and_ours_from_its_options():
    default = build_acodm()
    assert (default.action, default.signal.score, default.train_actor, default.noise) == ("softmax", "published", False, 1e-3)
    assert (default.network.hidden, default.network.depth, default.spec.layout, default.norm_layer_depths) == (
        1024, 5, "reference", (1 / 16, 2 / 16, 4 / 16, 6 / 16, 8 / 16, 10 / 16, 12 / 16, 14 / 16, 1.0))
    assert default.spec.state_dim == 3 * 3 + 2 * 9 + 1 and default.agent.critic.reward_shape == (3,)
    assert default.needs == {DOMAIN_LOSSES, GRADIENT_GRAM, LAYER_NORMS, LAYER_DRIFTS}
    # ddpg.yml: gamma 0.95, tau 0.001, a pool of 10,000, batches of 32, lr 0.01 warmed up over 834 of
    # 41,667 steps then cosine to 0.001; AdamW with the model configs' weight decay 0.1
    assert default.config == DDPGConfig(gamma=0.95, tau=1e-3, buffer_size=10000, batch_size=32, lr=0.01, min_lr=0.001,
                                        lr_warmup_updates=4, total_updates=200, weight_decay=0.1)
    assert default.warmup_steps == 4 and default.teacher.update == "smoothed-mean" and default.teacher.smoothing == 0.5
    assert numpy.allclose(default.weights(), [0.6, 0.3, 0.1])  # the corpus's own mixture, as the Pile's weights
    assert isinstance(default.agent.actor_optimizer, torch.optim.AdamW)
    # ours starts from, and is pulled back to, equal weights unless --mixing-prior says otherwise
    bounded = build_acodm("--acodm-action", "bounded", "--acodm-reward", "alignment")
    assert numpy.allclose(bounded.weights(), [1 / 3] * 3)
    assert numpy.allclose(bounded.mirror.log_prior.exp().numpy(), [1 / 3] * 3)

    argv = ["--acodm-action", "bounded", "--acodm-reward", "alignment", "--acodm-train-actor", "--acodm-hidden", "32",
            "--acodm-depth", "3", "--acodm-feature-depths", "0.5,1.0", "--acodm-max-step", "0.05",
            "--mixing-prior", "data-path", "--mixing-objective", "prose,maths", "--acodm-noise", "0.3"]
    mixer = build_acodm(*argv)
    assert (mixer.network.hidden, mixer.network.depth, mixer.norm_layer_depths, mixer.noise) == (32, 3, (0.5, 1.0), 0.3)
    assert mixer.spec.state_dim == 6 * 3 + 2 * 2 + 1 and mixer.mirror.max_step == 0.05 and mixer.teacher is None
    assert numpy.allclose(mixer.weights(), INITIAL) and numpy.allclose(mixer.signal.objective, [0.5, 0, 0.5])
    assert mixer.signal.score == "alignment" and mixer.needs == {DOMAIN_LOSSES, GRADIENT_GRAM, LAYER_NORMS}
    with pytest.raises(UserError, match="--acodm-reward published scores the domains against each other and reads no objective; drop --mixing-objective, or give --acodm-reward alignment"):
        build_acodm("--mixing-objective", "prose")
    with pytest.raises(UserError, match="--acodm-feature-depths \\[1.0\\]: the reference state normalises the layer norms across the layers; give two or more depths"):
        build_acodm("--acodm-feature-depths", "1.0")


def normalised(values) -> numpy.ndarray:
    """The reference's mean_std_norm, written out: sample std, 1e-8, clipped to +-3."""
    values = numpy.asarray(values, dtype=float)
    return numpy.clip((values - values.mean()) / (values.std(ddof=1) + 1e-8), -3, 3)


def test_the_reference_state_by_hand():
    spec = FeatureSpec(3, (0.5, 1.0))
    assert [name for name, _ in spec.blocks] == ["loss", "loss_change", "samples", "norm", "norm_change", "progress"]
    memory, builder = SignalMemory(3, 0.9), StateBuilder(spec, total_steps=50)
    memory.update(numpy.array([True, True, False]), numpy.array([4.0, 3.0, numpy.nan]))
    first = builder.state(StepView(memory, 0, numpy.array([2.0, 3.0]), numpy.array([5, 3, 0]), numpy.array([0.0, 0.0])))
    # loss [4, 3, never seen: the mean 3.5]: deviations +-0.5 and 0, sample std 0.5; no change, no drift yet
    assert first[:3] == pytest.approx([1.0, -1.0, 0.0], rel=1e-7) and numpy.array_equal(first[3:6], [0.0, 0.0, 0.0])
    # samples [5, 3, 0]: mean 8/3, sample std sqrt(19/3)
    assert first[6:9] == pytest.approx(numpy.array([7 / 3, 1 / 3, -8 / 3]) / math.sqrt(19 / 3), rel=1e-7)
    # norms [2, 3]: deviations -+0.5, sample std sqrt(0.5)
    assert first[9:11] == pytest.approx([-1 / math.sqrt(2), 1 / math.sqrt(2)], rel=1e-7)
    assert numpy.array_equal(first[11:13], [0.0, 0.0]) and first[13] == 100 * 1 / 50

    memory.update(numpy.array([True, True, True]), numpy.array([3.0, 3.5, 6.0]))
    second = builder.state(StepView(memory, 9, numpy.array([2.5, 3.0]), numpy.array([4, 2, 2]), numpy.array([0.5, 0.25])))
    # changes from each domain's first loss: [3 - 4, 3.5 - 3, 6 - 6]: mean -1/6, sample std sqrt(7/12)
    assert second[3:6] == pytest.approx(numpy.array([-5 / 6, 2 / 3, 1 / 6]) / math.sqrt(7 / 12), rel=1e-7)
    # drifts [0.5, 0.25]: deviations +-0.125, sample std 0.125 sqrt(2)
    assert second[11:13] == pytest.approx([1 / math.sqrt(2), -1 / math.sqrt(2)], rel=1e-7)
    assert second[13] == 100 * 10 / 50

    # With more entries than (n - 1) / sqrt(n) < 3 allows, an outlier is clipped at 3.
    wide = FeatureSpec(3, tuple((i + 1) / 12 for i in range(12)))
    norms = numpy.array([1.0] * 11 + [100.0])
    state = StateBuilder(wide, 10).state(StepView(memory, 0, norms, numpy.array([1, 1, 1]), numpy.zeros(12)))
    assert state[wide.block("norm")][-1] == 3.0 and state[wide.block("norm")][0] == pytest.approx(normalised(norms)[0])


def test_the_agents_learning_rate_is_the_references_schedule():
    config = DDPGConfig(lr=0.01, min_lr=0.001, lr_warmup_updates=10, total_updates=100)
    # warm-up: 0.01 n / 10; then 0.005 (cos(pi (min(n, 90) - 10) / 100) + 1), at least 0.001
    expected = {0: 0.0, 5: 0.005, 10: 0.01, 55: 0.005 * (math.cos(math.pi * 0.45) + 1), 80: 0.005 * (math.cos(math.pi * 0.7) + 1), 95: 0.001}
    for update, rate in expected.items():
        assert learning_rate(config, update) == pytest.approx(rate, rel=1e-12), update
    assert learning_rate(config, 80) == pytest.approx(0.0020611, rel=1e-4)


def published_mixer(**options) -> ACODMMixer:
    return ACODMMixer(NAMES, [1.0] * 3, total_steps=100, seed=3, hidden=32, depth=2, layer_depths=DEPTHS, **options)


def published_signals(problem: QuadraticDomains, step: int, weights: numpy.ndarray) -> StepSignals:
    signals = problem.step(step, weights)
    signals.layer_weight_drifts = numpy.array([0.0, 0.1, 0.2, 0.3]) * step
    return signals


def test_the_warmup_follows_odms_smoothed_mean_by_hand_and_the_actor_never_learns():
    mixer = published_mixer(warmup_fraction=0.06)  # 6 steps
    problem = QuadraticDomains(TRIANGLE)
    actor = parameters(mixer.agent.actor)
    critic = parameters(mixer.agent.critic)
    rewards, followed = numpy.zeros(3), []
    for step in range(6):
        followed.append(mixer.weights())
        signals = published_signals(problem, step, mixer.weights())
        mixer.observe(signals)
        # R <- 0.5 R + 0.5 exp(L) (from R = 0); e = min(1/3, sqrt(ln 3 / (3 t))); w = (1 - 3 e') R / sum R + e'
        rewards = 0.5 * rewards + 0.5 * numpy.exp(signals.domain_loss)
        t = step + 1
        exploration = min(1 / 3, math.sqrt(math.log(3) / (3 * t)))
        if step < 5:
            assert mixer.weights() == pytest.approx((1 - 3 * exploration) * rewards / rewards.sum() + exploration, rel=1e-12), step
    assert numpy.allclose(followed[:4], 1 / 3)  # e = 1/3 until t > 3 ln 3
    assert not numpy.allclose(followed[5], 1 / 3)
    assert mixer.agent.buffer.size == 5 and numpy.allclose(mixer.agent.buffer.actions[:5].numpy(), followed[1:6])
    assert not moved(actor, mixer.agent.actor) and moved(critic, mixer.agent.critic)
    # After the warm-up: the targets are the online networks, and the weights the actor's explored softmax.
    assert all(torch.equal(a, b) for a, b in zip(mixer.agent.target_critic.parameters(), mixer.agent.critic.parameters()))
    for step in range(6, 30):
        mixer.observe(published_signals(problem, step, mixer.weights()))
    # The exploration of the next step, by hand: the softmax less 0.001 times uniform draws, renormalised.
    generator = torch.Generator()
    generator.set_state(mixer.generator.get_state())
    explored = mixer._next_weights(mixer.last_state)
    probabilities = torch.softmax(mixer.agent.outputs(mixer.last_state), -1).numpy()
    expected = numpy.maximum(probabilities - 1e-3 * torch.rand(3, generator=generator, dtype=torch.float64).numpy(), 0.0)
    assert explored == pytest.approx(expected / expected.sum(), rel=1e-12) and not numpy.allclose(explored, probabilities, rtol=1e-6)
    assert not moved(actor, mixer.agent.actor)  # the reference's actor keeps its initial weights


def test_with_train_actor_the_warmup_teaches_the_actor_the_teachers_weights():
    mixer = published_mixer(warmup_fraction=0.3, train_actor=True)
    problem = QuadraticDomains(TRIANGLE)
    actor = copy.deepcopy(mixer.agent.actor)
    for step in range(30):
        mixer.observe(published_signals(problem, step, mixer.weights()))
    buffer = mixer.agent.buffer
    states, teacher = buffer.states[: buffer.size], buffer.actions[: buffer.size]
    with torch.no_grad():
        before = ((torch.softmax(actor(states), -1) - teacher) ** 2).mean()
        after = ((torch.softmax(mixer.agent.actor(states), -1) - teacher) ** 2).mean()
    assert after < 0.5 * before, (float(before), float(after))


def test_the_samples_every_domain_gets_by_default():
    from megatron_acodm.training.inputs import min_samples_per_domain

    # one micro-batch of every domain for acodm, no more than half the global batch in all; none for the others
    assert min_samples_per_domain(acodm_args("--micro-batch-size", "2", "--global-batch-size", "16"), 3) == 2
    assert min_samples_per_domain(acodm_args("--micro-batch-size", "4", "--global-batch-size", "16"), 3) == 2  # 3 x 2 <= 8
    assert min_samples_per_domain(acodm_args("--micro-batch-size", "8", "--global-batch-size", "1152"), 22) == 8  # the reference's
    assert min_samples_per_domain(acodm_args("--micro-batch-size", "2", "--min-samples-per-domain", "0"), 3) == 0
    assert min_samples_per_domain(mixer_args("--mixer", "odm", "--micro-batch-size", "2"), 3) == 0
