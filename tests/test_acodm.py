"""AC-ODM: the DDPG agent, the state, the reward, warm-up on ODM, proxy export/import, exact resume."""

from __future__ import annotations

import argparse
import copy
import io
import math
import warnings

import numpy
import pytest
import torch

from megatron_acodm.mixing import (
    DOMAIN_LOSSES,
    GRADIENT_GRAM,
    LAYER_NORMS,
    ACODMMixer,
    ODMMixer,
    StepSignals,
    add_mixer_arguments,
    build_mixer,
    layers_at_depths,
)
from megatron_acodm.mixing.acodm import PolicyError
from megatron_acodm.mixing.acodm.ddpg import DDPGAgent, DDPGConfig
from megatron_acodm.mixing.acodm.features import FeatureSpec, StateBuilder
from megatron_acodm.mixing.acodm.memory import SignalMemory
from megatron_acodm.mixing.acodm.networks import NetworkConfig, floored_softmax
from megatron_acodm.mixing.acodm.policy import POLICY_FORMAT, load_policy
from megatron_acodm.mixing.acodm.reward import domain_alignments, mixture_reward

NAMES = ["prose", "code", "maths"]
INITIAL = [0.5, 0.25, 0.25]
DEPTHS = (0.25, 0.5, 0.75, 1.0)
BATCH = 32
# Fixed per-domain gradients: `code` agrees most with the others, so the best mixture under
# R(a) = sum_k a_k r_k is the corner on `code`, kept off the edge by the floor.
GRADIENTS = numpy.array([[1.0, 0.0], [0.6, 0.8], [-0.3, 1.0]])
GRAM = GRADIENTS @ GRADIENTS.T


def make_signals(
    step: int,
    weights: numpy.ndarray,
    total_steps: int,
    gram: numpy.ndarray = GRAM,
    norm_scale: float = 1.0,
    layer_norms: numpy.ndarray | None = None,
) -> StepSignals:
    """A synthetic step: counts follow the weights, losses fall and layer norms grow with progress."""
    counts = numpy.floor(weights * BATCH + 0.5).astype(int)
    progress = step / total_steps
    losses = numpy.array([3.0, 2.0, 4.0]) * (1.0 - 0.3 * progress)
    tokens = counts * 100.0
    present = numpy.outer(counts > 0, counts > 0)
    if layer_norms is None:
        layer_norms = norm_scale * numpy.array([10.0, 11.0, 12.5, 14.0]) * (1.0 + 0.1 * progress)
    return StepSignals(
        step=step,
        domain_loss_sum=losses * tokens,
        domain_tokens=tokens,
        realised_counts=counts,
        domain_gram=numpy.where(present, gram, 0.0),
        layer_weight_norms=layer_norms,
    )


def make_mixer(total_steps: int = 400, seed: int = 7, lr: float = 1e-3, **options) -> ACODMMixer:
    config = DDPGConfig(lr=lr, lr_warmup_steps=10, noise=options.pop("noise", 0.3))
    return ACODMMixer(NAMES, INITIAL, total_steps=total_steps, seed=seed, config=config, hidden=64, **options)


def run(mixer: ACODMMixer, steps: range, total_steps: int) -> list[numpy.ndarray]:
    """Feed `steps` synthetic steps; return the weights of each step that follows."""
    weights = []
    for step in steps:
        mixer.observe(make_signals(step, mixer.weights(), total_steps))
        weights.append(mixer.weights())
    return weights


def agent(lr: float = 1e-3) -> DDPGAgent:
    network = NetworkConfig(state_dim=FeatureSpec(3, DEPTHS).state_dim, num_domains=3, hidden=64)
    return DDPGAgent(network, DDPGConfig(lr=lr, lr_warmup_steps=0), torch.Generator().manual_seed(0))


def filled_agent(transitions: int = 64) -> DDPGAgent:
    ddpg = agent()
    rng = numpy.random.default_rng(0)
    alignments = domain_alignments(GRAM)
    for _ in range(transitions):
        state, next_state = rng.normal(size=(2, ddpg.actor.network[0].in_features))
        action = rng.dirichlet(numpy.ones(3))
        ddpg.remember(state, action, mixture_reward(action, alignments), next_state)
    return ddpg


def parameters(module: torch.nn.Module) -> list[torch.Tensor]:
    return [parameter.detach().clone() for parameter in module.parameters()]


def moved(before: list[torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(old, new) for old, new in zip(before, module.parameters()))


def test_reward_is_the_action_weighted_alignment_and_survives_non_finite_entries():
    gram = numpy.array([[4.0, 1.0, -2.0], [1.0, 1.0, 0.5], [-2.0, 0.5, 9.0]])
    scale = (2.0 + 1.0 + 3.0) / 3
    expected = numpy.array([1.0 - 2.0, 1.0 + 0.5, -2.0 + 0.5]) / scale
    assert numpy.allclose(domain_alignments(gram), expected, rtol=1e-15, atol=0)
    assert mixture_reward(numpy.array([0.2, 0.5, 0.3]), expected) == pytest.approx(0.2 * -0.5 + 0.5 * 0.75 - 0.3 * 0.75)
    assert numpy.array_equal(domain_alignments(numpy.zeros((3, 3))), numpy.zeros(3))
    broken = gram.copy()
    broken[0, 1] = broken[1, 0] = numpy.nan
    broken[2, 2] = numpy.inf
    assert numpy.all(numpy.isfinite(domain_alignments(broken)))


def test_state_layout_is_scale_free_and_absent_domains_age():
    spec = FeatureSpec(3, DEPTHS)
    assert spec.state_dim == 4 * 3 + 2 * 4 + 1 == sum(size for _, size in spec.blocks)
    assert layers_at_depths(DEPTHS, 2) == [0, 0, 1, 1]
    assert layers_at_depths(DEPTHS, 4) == [0, 1, 2, 3]
    assert layers_at_depths(DEPTHS, 1) == [0, 0, 0, 0]

    def states(loss_scale: float, norm_scale: float) -> list[numpy.ndarray]:
        memory, builder = SignalMemory(3, spec.stale_decay), StateBuilder(spec, total_steps=10)
        result = []
        for step, counts in enumerate(([4, 2, 2], [4, 4, 0], [4, 4, 0])):
            counts = numpy.array(counts, dtype=float)
            memory.update(counts > 0, loss_scale * numpy.array([3.0, 2.0, 4.0 + step]) / (step + 1), None)
            result.append(builder.state(memory, counts, norm_scale * numpy.array([1.0, 2.0, 3.0, 4.0 + step]), step))
        return result

    base, scaled = states(1.0, 1.0), states(7.0, 50.0)
    for one, other in zip(base, scaled):
        assert one.shape == (spec.state_dim,)
        assert numpy.allclose(one, other, rtol=0, atol=1e-12)  # bigger losses, wider model: the same state
    staleness = slice(9, 12)
    assert numpy.array_equal(base[0][staleness], [0.0, 0.0, 0.0])
    assert numpy.allclose(base[2][staleness], [0.0, 0.0, 1.0 - spec.stale_decay**2], rtol=1e-15, atol=0)
    # `maths` was absent from steps 1 and 2: its loss is held at step 0's, so its log-ratio stays 0
    assert base[2][3 + 2] == 0.0 and base[2][20] == pytest.approx(0.3)


def test_ddpg_update_moves_the_actor_and_raises_q_on_the_batch():
    ddpg = filled_agent()
    replay = torch.Generator()
    replay.set_state(ddpg.generator.get_state())
    batch_states = ddpg.buffer.states[torch.randint(ddpg.buffer.size, (ddpg.config.batch_size,), generator=replay)]
    actor_before = copy.deepcopy(ddpg.actor)
    ddpg.update(clone=False)
    assert moved(parameters(actor_before), ddpg.actor)
    with torch.no_grad():
        q_before = ddpg.critic(batch_states, floored_softmax(actor_before(batch_states), ddpg.floor)).mean()
        q_after = ddpg.critic(batch_states, floored_softmax(ddpg.actor(batch_states), ddpg.floor)).mean()
    assert q_after > q_before


def test_the_actor_optimizer_updates_the_actor_even_with_the_critic_frozen():
    ddpg = filled_agent()
    actor_ids = {id(parameter) for parameter in ddpg.actor.parameters()}
    assert {id(p) for group in ddpg.actor_optimizer.param_groups for p in group["params"]} == actor_ids
    ddpg.critic_optimizer.step = lambda *args, **kwargs: None  # the published code's only step
    actor_before, critic_before = parameters(ddpg.actor), parameters(ddpg.critic)
    ddpg.update(clone=False)
    assert moved(actor_before, ddpg.actor)
    assert not moved(critic_before, ddpg.critic)


def test_actor_learns_the_best_mixture_of_a_fixed_gram_matrix():
    total = 300
    mixer = make_mixer(total_steps=total)
    for weights in run(mixer, range(total), total):
        assert numpy.all(numpy.isfinite(weights)) and abs(weights.sum() - 1.0) <= 1e-12
        assert numpy.all(weights >= mixer.action_floor - 1e-15)
    floor = mixer.action_floor
    best = numpy.array([floor, 1.0 - 2 * floor, floor])
    assert domain_alignments(GRAM).argmax() == 1
    learned = mixer.agent.act(mixer.last_state, explore=False)
    uniform = numpy.full(3, 1 / 3)
    assert numpy.abs(learned - best).sum() < 0.25 * numpy.abs(uniform - best).sum()


def test_warmup_returns_odm_weights_exactly_while_the_actor_clones_them():
    total, warmup = 1000, 40
    mixer = make_mixer(total_steps=total, warmup_fraction=warmup / total)
    odm = ODMMixer(NAMES, INITIAL)
    initial_actor = copy.deepcopy(mixer.agent.actor)
    assert numpy.array_equal(mixer.weights(), odm.weights())
    for step in range(warmup):
        signals = make_signals(step, mixer.weights(), total)
        mixer.observe(signals)
        odm.observe(signals)
        if step + 1 < warmup:
            assert numpy.array_equal(mixer.weights(), odm.weights())
    assert not numpy.array_equal(mixer.weights(), odm.weights())  # the actor decides from now on

    buffer = mixer.agent.buffer
    states, targets = buffer.states[: buffer.size], buffer.actions[: buffer.size]

    def cloning_loss(actor: torch.nn.Module) -> float:
        with torch.no_grad():
            return float(-(targets * torch.log_softmax(actor(states), dim=-1)).sum(dim=-1).mean())

    assert cloning_loss(mixer.agent.actor) < cloning_loss(initial_actor) - 0.01


def test_non_finite_signal_keeps_the_last_weights_and_warns_once():
    total = 100
    mixer, reference = make_mixer(total_steps=total), make_mixer(total_steps=total)
    run(mixer, range(10), total)
    run(reference, range(10), total)
    before = mixer.weights()
    bad_gram = GRAM.copy()
    bad_gram[0, 2] = numpy.nan
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mixer.observe(make_signals(10, before, total, gram=bad_gram))
        assert numpy.array_equal(mixer.weights(), before)
        mixer.observe(make_signals(11, before, total, layer_norms=numpy.array([1.0, math.inf, 1.0, 1.0])))
        nan_loss = make_signals(12, before, total)
        nan_loss.domain_loss_sum[1] = numpy.nan
        mixer.observe(nan_loss)
        assert numpy.array_equal(mixer.weights(), before)
    assert len(caught) == 1 and "non-finite domain_gram" in str(caught[0].message)
    # the bad steps left no trace
    mixer.observe(make_signals(13, before, total))
    reference.observe(make_signals(13, before, total))
    assert numpy.array_equal(mixer.weights(), reference.weights())


@pytest.mark.parametrize("save_at", [3, 12])  # in the warm-up (8 steps of 400), and after it
def test_state_round_trip_through_torch_save_continues_identically(save_at):
    total = 400
    original = make_mixer(total_steps=total)
    run(original, range(save_at), total)
    stream = io.BytesIO()
    torch.save(original.state_dict(), stream)
    stream.seek(0)
    restored = make_mixer(total_steps=total, seed=99)  # the generator's state comes from the checkpoint
    restored.load_state_dict(torch.load(stream, weights_only=True))  # as dist_checkpointing loads
    for step in range(save_at, save_at + 20):
        assert numpy.array_equal(restored.weights(), original.weights())
        signals = make_signals(step, original.weights(), total)
        original.observe(signals)
        restored.observe(signals)
    assert numpy.array_equal(restored.weights(), original.weights())
    assert not moved(parameters(original.agent.critic), restored.agent.critic)


def test_same_seed_and_signals_give_identical_weights_on_every_rank():
    total = 100
    ranks = [make_mixer(total_steps=total, seed=5) for _ in range(2)]
    other_seed = make_mixer(total_steps=total, seed=6)
    for step in range(30):
        signals = make_signals(step, ranks[0].weights(), total)
        for mixer in (*ranks, other_seed):
            mixer.observe(signals)
        assert numpy.array_equal(ranks[0].weights(), ranks[1].weights())
    assert not numpy.array_equal(ranks[0].weights(), other_seed.weights())


def mixer_args(*argv: str) -> argparse.Namespace:
    """The command line's mixer options, with the trainer's --train-iters 200."""
    args = add_mixer_arguments(argparse.ArgumentParser()).parse_args(["--mixer", "acodm", *argv])
    args.train_iters = 200
    return args


def test_exported_policy_reproduces_the_actor_and_drives_a_deeper_target(tmp_path):
    total = 200
    proxy = make_mixer(total_steps=total)
    proxy_layers = [torch.randn(16, 32, generator=torch.Generator().manual_seed(layer)) for layer in range(2)]
    for step in range(60):  # a 2-layer proxy: its norms at depths 0.25..1.0 are those of layers 0, 0, 1, 1
        norms = numpy.array([float(proxy_layers[i].norm()) * (1 + 0.01 * step) for i in layers_at_depths(DEPTHS, 2)])
        proxy.observe(make_signals(step, proxy.weights(), total, layer_norms=norms))
    path = str(tmp_path / "policy.pt")
    proxy.export_policy(path)
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary file was renamed over the target

    policy = load_policy(path, NAMES)
    states = numpy.random.default_rng(0).normal(size=(20, proxy.spec.state_dim))
    for state in states:
        assert numpy.array_equal(policy.act(state, proxy.action_floor), proxy.agent.act(state, explore=False))

    # A 4-layer target of another width reads its own state with the proxy's relative depths.
    target = build_mixer("acodm", names=NAMES, initial_weights=INITIAL, args=mixer_args("--acodm-policy", path))
    assert target.agent is None and target.feature_layer_depths == list(DEPTHS)
    assert ACODMMixer.needs == {DOMAIN_LOSSES, GRADIENT_GRAM, LAYER_NORMS}
    assert target.needs == {DOMAIN_LOSSES, LAYER_NORMS}  # no reward in proxy mode, so no Gram matrix
    target_layers = [torch.randn(128, 512, generator=torch.Generator().manual_seed(layer)) for layer in range(4)]
    for step in range(10):
        norms = numpy.array([float(target_layers[i].norm()) for i in layers_at_depths(target.feature_layer_depths, 4)])
        signals = make_signals(step, target.weights(), total, layer_norms=norms)
        signals.domain_gram = None  # proxy mode has no reward, so the trainer skips the sketches
        target.observe(signals)
        weights = target.weights()
        assert numpy.all(numpy.isfinite(weights)) and abs(weights.sum() - 1.0) <= 1e-12
        assert numpy.all(weights >= target.action_floor - 1e-15)
        assert numpy.array_equal(weights, policy.act(target.last_state, target.action_floor))  # no noise

    with pytest.raises(ValueError, match="differs from the policy's"):
        build_mixer(
            "acodm",
            names=NAMES,
            initial_weights=INITIAL,
            args=mixer_args("--acodm-policy", path, "--acodm-feature-depths", "0.5,1.0"),
        )


def test_policy_for_other_domains_or_a_damaged_file_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "policy.pt"
    make_mixer(total_steps=50).export_policy(str(path))
    for names in (["prose", "code", "legal"], ["code", "prose", "maths"]):
        with pytest.raises(PolicyError, match=f"{path}.*same domains in the same order"):
            load_policy(str(path), names)

    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(path.read_bytes()[:200])
    with pytest.raises(PolicyError, match=f"{corrupt}: not a readable AC-ODM policy.*--acodm-export-policy"):
        load_policy(str(corrupt), NAMES)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(PolicyError, match=f"{other}: not an AC-ODM policy file"):
        load_policy(str(other), NAMES)
    future = tmp_path / "future.pt"
    torch.save({"format": POLICY_FORMAT, "version": 99, "domains": NAMES}, future)
    with pytest.raises(PolicyError, match=f"{future}: policy format version 99, this program reads version 1"):
        load_policy(str(future), NAMES)
    damaged = tmp_path / "damaged.pt"
    payload = torch.load(path, weights_only=True)
    payload["feature_spec"]["state_dim"] = 7
    torch.save(payload, damaged)
    with pytest.raises(PolicyError, match=f"{damaged}: a damaged AC-ODM policy"):
        load_policy(str(damaged), NAMES)
    with pytest.raises(PolicyError, match="no such policy file"):
        load_policy(str(tmp_path / "missing.pt"), NAMES)


def test_registry_builds_acodm_from_its_options():
    argv = ["--acodm-hidden", "32", "--acodm-depth", "3", "--acodm-feature-depths", "0.5,1.0", "--acodm-floor", "0.05"]
    mixer = build_mixer("acodm", names=NAMES, initial_weights=INITIAL, args=mixer_args(*argv))
    assert isinstance(mixer, ACODMMixer)
    assert (mixer.network.hidden, mixer.network.depth, mixer.feature_layer_depths) == (32, 3, [0.5, 1.0])
    assert mixer.spec.state_dim == 4 * 3 + 2 * 2 + 1 and mixer.action_floor == 0.05
    assert mixer.warmup_steps == 4  # 2% of 200 steps
    default = build_mixer("acodm", names=NAMES, initial_weights=INITIAL, args=mixer_args())
    assert default.action_floor == pytest.approx(1 / 30) and default.feature_layer_depths == list(DEPTHS)
    with pytest.raises(ValueError, match="--train-iters"):
        build_mixer("acodm", names=NAMES, initial_weights=INITIAL)
