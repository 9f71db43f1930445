"""`--mixer acodm`: AC-ODM (arXiv 2505.23878), a DDPG actor-critic deciding each step's domain weights.

Training mode (the default), each global step t, in `observe`:
1. the step's losses and Gram matrix enter `SignalMemory` (absent domains keep their last ones);
   the state s_t (`features.py`) is built from them, the step's realised counts and layer norms;
2. the transition (s_{t-1}, a_t, R_t, s_t) enters the replay buffer, a_t the weights step t used
   and R_t = sum_k a_t,k r_k its action-weighted gradient alignment (`reward.py`), and DDPG
   makes one update (`ddpg.py`);
3. the action of step t + 1 is the actor's, mu(s_t), with Gaussian noise on its logits.
For the first `ceil(warmup_fraction * T)` steps the weights are those of an ODM mixer held inside,
the actor is cloned towards them and the critic learns from them. The first step, before any
state exists, uses the initial weights (what ODM starts with too).

Proxy mode (`--acodm-policy FILE`): an actor another run exported drives the weights frozen from
the first state on, with no warm-up, critic, training or noise; it needs no Gram matrix.

Every rank runs the same arithmetic on the same all-reduced signals, with all randomness drawn
from one generator seeded with the run's seed and saved in the state, and on one CPU thread (a
thread count would change the order of float sums), so all ranks decide the same weights.
"""

from __future__ import annotations

import argparse
import contextlib
import math
from typing import Any, Iterator, Optional, Sequence

import numpy
import torch

from megatron_acodm.errors import UserError
from megatron_acodm.mixing.acodm.ddpg import DDPGAgent, DDPGConfig
from megatron_acodm.mixing.acodm.features import DEFAULT_LAYER_DEPTHS, DEFAULT_STALE_DECAY, FeatureSpec, StateBuilder
from megatron_acodm.mixing.acodm.memory import SignalMemory
from megatron_acodm.mixing.acodm.networks import NetworkConfig
from megatron_acodm.mixing.acodm.policy import FrozenPolicy, load_policy, save_policy
from megatron_acodm.mixing.acodm.reward import domain_alignments, mixture_reward
from megatron_acodm.mixing.base import DOMAIN_LOSSES, GRADIENT_GRAM, LAYER_NORMS, Mixer, StepSignals
from megatron_acodm.mixing.odm import ODMMixer


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """The agent's arithmetic on one thread: every rank then sums its floats in the same order."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _relative_depths(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(depth) for depth in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected relative depths such as 0.25,0.5,1.0, got {text!r}") from None


class ACODMMixer(Mixer):
    """AC-ODM; see the module's docstring. The trainer provides `layer_weight_norms` at
    `feature_layer_depths` and, in training mode, `domain_gram` with every step's signals."""

    needs = frozenset({DOMAIN_LOSSES, GRADIENT_GRAM, LAYER_NORMS})

    def __init__(
        self,
        names: Sequence[str],
        initial_weights: Sequence[float],
        *,
        total_steps: int,
        seed: int,
        config: Optional[DDPGConfig] = None,
        hidden: int = 256,
        depth: int = 2,
        layer_depths: Optional[Sequence[float]] = None,
        stale_decay: Optional[float] = None,
        warmup_fraction: float = 0.02,
        odm: Optional[ODMMixer] = None,
        policy: Optional[FrozenPolicy] = None,
        floor: float = 0.0,
    ):
        """`floor` is --mixing-floor, applied over the action as every mixer's is; `config.floor` is
        the action's own (--acodm-floor). `policy` switches to proxy mode: the network, feature depths
        and stale decay are then the policy's, and `odm`, `hidden`, `depth` go unused."""
        super().__init__(names, initial_weights, floor)
        if not 0.0 <= warmup_fraction <= 1.0:
            raise UserError(f"--acodm-warmup-fraction must be in [0, 1], got {warmup_fraction}")
        self.config = config or DDPGConfig()
        self.action_floor = self.config.action_floor(self.num_domains)
        self.policy = policy
        self.generator = torch.Generator().manual_seed(seed)
        if policy is None:
            self.spec = FeatureSpec(
                self.num_domains,
                tuple(layer_depths or DEFAULT_LAYER_DEPTHS),
                DEFAULT_STALE_DECAY if stale_decay is None else stale_decay,
            )
            self.network = NetworkConfig(self.spec.state_dim, self.num_domains, hidden, depth)
            with _one_thread():
                self.agent: Optional[DDPGAgent] = DDPGAgent(self.network, self.config, self.generator)
            self.odm: Optional[ODMMixer] = odm or ODMMixer(names, initial_weights)
            self.warmup_steps = math.ceil(warmup_fraction * total_steps)
        else:
            self._check_policy_fits(policy, layer_depths, stale_decay)
            self.spec, self.network = policy.spec, policy.network
            self.agent, self.odm, self.warmup_steps = None, None, 0
            self.needs = frozenset({DOMAIN_LOSSES, LAYER_NORMS})  # no reward, hence no Gram matrix
        self.memory = SignalMemory(self.num_domains, self.spec.stale_decay)
        self.features = StateBuilder(self.spec, total_steps)
        self.steps_observed = 0
        self.last_state: Optional[numpy.ndarray] = None
        self.action: Optional[numpy.ndarray] = None  # the actor's choice for the next step

    @staticmethod
    def _check_policy_fits(
        policy: FrozenPolicy, layer_depths: Optional[Sequence[float]], stale_decay: Optional[float]
    ) -> None:
        if layer_depths is not None and tuple(layer_depths) != policy.spec.layer_depths:
            raise UserError(
                f"--acodm-feature-depths {list(layer_depths)} differs from the policy's "
                f"{list(policy.spec.layer_depths)}: the frozen actor reads the depths it was trained on; leave it out"
            )
        if stale_decay is not None and stale_decay != policy.spec.stale_decay:
            raise UserError(
                f"--acodm-stale-decay {stale_decay} differs from the policy's {policy.spec.stale_decay}; leave it out"
            )

    @property
    def feature_layer_depths(self) -> list[float]:
        """Relative depths (in (0, 1]) of the layers whose `linear_fc2` weight norms the trainer must
        send as `StepSignals.layer_weight_norms`, in this order (`megatron_acodm.model.layers_at_depths` maps them)."""
        return list(self.spec.layer_depths)

    @classmethod
    def add_arguments(cls, group: argparse._ArgumentGroup) -> None:
        defaults = DDPGConfig()
        add = group.add_argument
        add("--acodm-hidden", type=int, default=256, help="AC-ODM: width of the actor's and critic's hidden layers")
        add(
            "--acodm-depth",
            type=int,
            default=2,
            help="AC-ODM: hidden layers of the actor and the critic (the paper's: --acodm-hidden 1024 --acodm-depth 5)",
        )
        add("--acodm-gamma", type=float, default=defaults.gamma, help="AC-ODM: discount of the critic's target")
        add("--acodm-tau", type=float, default=defaults.tau, help="AC-ODM: soft update rate of the target networks")
        add("--acodm-buffer-size", type=int, default=defaults.buffer_size, help="AC-ODM: replay buffer capacity")
        add("--acodm-batch-size", type=int, default=defaults.batch_size, help="AC-ODM: transitions per update")
        add("--acodm-lr", type=float, default=defaults.lr, help="AC-ODM: Adam learning rate of actor and critic")
        add(
            "--acodm-lr-warmup-steps",
            type=int,
            default=defaults.lr_warmup_steps,
            help="AC-ODM: updates over which the learning rate rises linearly to --acodm-lr",
        )
        add(
            "--acodm-noise",
            type=float,
            default=defaults.noise,
            help="AC-ODM: std of the Gaussian exploration noise on the actor's logits",
        )
        add("--acodm-floor", type=float, default=None, help="AC-ODM: least action entry, in [0, 1/K]; default 1/(10K)")
        add(
            "--acodm-warmup-fraction",
            type=float,
            default=0.02,
            help="AC-ODM: fraction of --train-iters on ODM's weights while the actor clones them",
        )
        add(
            "--acodm-feature-depths",
            type=_relative_depths,
            default=None,
            help=f"AC-ODM: relative depths of the layers whose linear_fc2 weight norms the state reads; "
            f"default {','.join(map(str, DEFAULT_LAYER_DEPTHS))}, or the policy's with --acodm-policy",
        )
        add(
            "--acodm-stale-decay",
            type=float,
            default=None,
            help=f"AC-ODM: per-step decay of an absent domain's last Gram entries, in [0, 1); "
            f"default {DEFAULT_STALE_DECAY}, or the policy's with --acodm-policy",
        )
        add(
            "--acodm-export-policy",
            default=None,
            metavar="PATH",
            help="AC-ODM: write the actor here at the end of the run, for another run's --acodm-policy",
        )
        add(
            "--acodm-policy",
            default=None,
            metavar="PATH",
            help="AC-ODM proxy mode: this exported actor decides the weights, frozen (no critic, training or noise)",
        )

    @classmethod
    def from_args(
        cls, *, names: Sequence[str], initial_weights: Sequence[float], args: argparse.Namespace, **_: Any
    ) -> Mixer:
        total_steps = getattr(args, "train_iters", None)
        if total_steps is None:
            raise UserError(
                "--mixer acodm needs --train-iters: the state holds progress t/T, the warm-up is part of T"
            )
        policy = load_policy(args.acodm_policy, names) if args.acodm_policy else None
        # The warm-up's ODM takes the --odm-* options; the floor is applied once, by this mixer.
        odm_args = argparse.Namespace(**{**vars(args), "mixing_floor": 0.0})
        odm = None if policy else ODMMixer.from_args(names=names, initial_weights=initial_weights, args=odm_args)
        config = DDPGConfig(
            gamma=args.acodm_gamma,
            tau=args.acodm_tau,
            buffer_size=args.acodm_buffer_size,
            batch_size=args.acodm_batch_size,
            lr=args.acodm_lr,
            lr_warmup_steps=args.acodm_lr_warmup_steps,
            noise=args.acodm_noise,
            floor=args.acodm_floor,
        )
        return cls(
            names,
            initial_weights,
            total_steps=total_steps,
            seed=args.seed,
            config=config,
            hidden=args.acodm_hidden,
            depth=args.acodm_depth,
            layer_depths=args.acodm_feature_depths,
            stale_decay=args.acodm_stale_decay,
            warmup_fraction=args.acodm_warmup_fraction,
            odm=odm,
            policy=policy,
            floor=args.mixing_floor,
        )

    def export_policy(self, path: str) -> None:
        """Write the actor with its feature spec to `path` (atomically), for `--acodm-policy` in another run."""
        actor = self.agent.actor if self.agent is not None else self.policy.actor
        save_policy(path, self.names, self.spec, self.network, actor)

    def _warming_up(self) -> bool:
        return self.steps_observed < self.warmup_steps

    def _policy(self) -> numpy.ndarray:
        if self._warming_up():
            return self.odm.weights()
        if self.action is None:  # no state seen yet
            return self.initial_weights
        return self.action

    @staticmethod
    def _signal(value: Optional[numpy.ndarray], field: str, shape: tuple[int, ...], meaning: str) -> numpy.ndarray:
        if value is None:
            raise ValueError(f"AC-ODM needs StepSignals.{field} every step (see its `needs`); the trainer gave none")
        value = numpy.asarray(value, dtype=numpy.float64)
        if value.shape != shape:
            raise ValueError(f"StepSignals.{field} has shape {value.shape}, AC-ODM expects {shape}: {meaning}")
        return value

    def _update(self, signals: StepSignals) -> None:
        gram = None
        if self.agent is not None:
            shape = (self.num_domains, self.num_domains)
            gram = self._signal(signals.domain_gram, "domain_gram", shape, f"one row per domain of {self.names}")
        norms = self._signal(
            signals.layer_weight_norms,
            "layer_weight_norms",
            (self.spec.num_layers,),
            f"one norm per relative depth of feature_layer_depths {self.feature_layer_depths}",
        )
        used = self._policy()
        cloning = self._warming_up()
        present = (signals.realised_counts > 0) & (signals.domain_tokens > 0)
        with _one_thread():
            self.memory.update(present, signals.domain_loss, gram)
            counts = signals.realised_counts.astype(numpy.float64)
            state = self.features.state(self.memory, counts, norms, signals.step)
            if self.agent is not None:
                if self.last_state is not None:
                    reward = mixture_reward(used, domain_alignments(self.memory.decayed_gram()))
                    self.agent.remember(self.last_state, used, reward, state)
                    self.agent.update(clone=cloning)
                if self.steps_observed + 1 < self.warmup_steps:  # ODM still decides the next step
                    self.odm.observe(signals)
            self.steps_observed += 1
            self.last_state = state
            if not self._warming_up():
                self.action = (
                    self.agent.act(state, explore=True)
                    if self.agent is not None
                    else self.policy.act(state, self.action_floor)
                )

    def _state(self) -> dict[str, Any]:
        def tensor(value: Optional[numpy.ndarray]) -> Optional[torch.Tensor]:
            return None if value is None else torch.from_numpy(value.copy())

        return {
            "mode": "train" if self.policy is None else "proxy",
            "feature_spec": self.spec.to_dict(),
            "network": self.network.to_dict(),
            "steps_observed": self.steps_observed,
            "last_state": tensor(self.last_state),
            "action": tensor(self.action),
            "memory": self.memory.state_dict(),
            "features": self.features.state_dict(),
            "generator": self.generator.get_state(),
            "agent": None if self.agent is None else self.agent.state_dict(),
            "odm": None if self.odm is None else self.odm.state_dict(),
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        mode = "train" if self.policy is None else "proxy"
        if state["mode"] != mode:
            raise UserError(
                f"the AC-ODM state is from {state['mode']} mode, this run's is {mode} (see --acodm-policy)"
            )
        for key, current in (("feature_spec", self.spec.to_dict()), ("network", self.network.to_dict())):
            if state[key] != current:
                raise UserError(
                    f"the AC-ODM state has {key} {state[key]}, this run has {current}; "
                    f"resume with the same --acodm-* options"
                )

        def array(value: Optional[torch.Tensor]) -> Optional[numpy.ndarray]:
            return None if value is None else value.numpy().copy()

        self.steps_observed = int(state["steps_observed"])
        self.last_state = array(state["last_state"])
        self.action = array(state["action"])
        self.memory.load_state_dict(state["memory"])
        self.features.load_state_dict(state["features"])
        self.generator.set_state(state["generator"])
        if self.agent is not None:
            self.agent.load_state_dict(state["agent"])
        if self.odm is not None:
            self.odm.load_state_dict(state["odm"])
