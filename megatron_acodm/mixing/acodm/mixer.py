"""`--mixer acodm`: AC-ODM (arXiv 2505.23878), a DDPG actor-critic deciding each step's domain weights.

The paper's agent, with its action bounded (docs/DESIGN.md, "AC-ODM"). Each global step t, in `observe`:
1. the step's half-sketch Gram matrix enters the alignment signal (`mixing/alignment.py`): per
   domain a smoothed, scale-free score r_k = <g_k, g_obj> with its standard error, from which
   `direction` in [-1, 1]^K proposes where to move (zero where the score is within its error);
2. the state s_t (`features.py`) holds the losses, the weights w_t the step used, the direction,
   the scores' signal-to-noise, layer norms and progress;
3. the transition (s_{t-1}, w_t, R_t, s_t) enters the replay buffer, R_t = sum_k w_t,k r_t,k the
   alignment of the step's training gradient with the objective's (its first-order decrease),
   and DDPG makes one update (the actor only after the warm-up);
4. the next weights: w_{t+1} = M(w_t, max_step * sigmoid(mu(s_t)) * direction), M the bounded
   mirror step towards the prior (`mixing/mirror_step.py`): the actor decides how far to follow
   the signal on each domain, never more than `max_step` per step nor outside the KL ball.
A zero or pure-noise signal gives a zero direction, so the weights stay at the prior.

`--acodm-reward published` takes the reward of the reference code instead: R_t is the vector of
per-domain rewards `alignment.published_rewards` computes from the step's Gram (the off-diagonal
row sums, z-scored across the domains), the critic has one output per domain and regresses each on
its own target, and the actor's loss is the mean of those outputs. It reads no objective. The step
stays the bounded one, and its direction comes from the same reward: the per-domain reward smoothed
over the steps each domain was present, less the mixture's mean, in standard errors
(`AlignmentSignal.direction`), so the direction follows what the reward pays for. (The reward's
z-score across domains has mean zero whatever the weights, so, as in the reference, the actor's
objective barely depends on its action: the direction does the work.)

Proxy mode (`--acodm-policy FILE`): an actor another run exported decides the steps, frozen (no
critic, training or noise); the target still measures its own alignment signal.

Every rank runs the same arithmetic on the same all-reduced signals, with all randomness drawn
from one generator seeded with the run's seed and saved in the state, and on one CPU thread (a
thread count would change the order of float sums), so all ranks decide the same weights.
"""

from __future__ import annotations

import argparse
import contextlib
import math
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy
import torch

from megatron_acodm.errors import UserError
from megatron_acodm.output_paths import check_output_file
from megatron_acodm.mixing.acodm.ddpg import DDPGAgent, DDPGConfig, Reward
from megatron_acodm.mixing.acodm.features import DEFAULT_LAYER_DEPTHS, DEFAULT_STALE_DECAY, FeatureSpec, StateBuilder
from megatron_acodm.mixing.acodm.memory import SignalMemory
from megatron_acodm.mixing.acodm.networks import NetworkConfig
from megatron_acodm.mixing.acodm.policy import FrozenPolicy, load_policy, save_policy
from megatron_acodm.mixing.alignment import SCORES, AlignmentSignal
from megatron_acodm.mixing.base import DOMAIN_LOSSES, GRADIENT_GRAM, LAYER_NORMS, TARGET_GRADIENT, Mixer, StepSignals, run_length
from megatron_acodm.mixing.mirror_step import BoundedMirrorStep
from megatron_acodm.mixing.weighting import mixing_prior, objective_weighting
from megatron_acodm.mixing.dga import check_target_interval
from megatron_acodm.sketch.segments import sketch_rows


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
    """AC-ODM; see the module's docstring. The trainer provides, with every step's signals,
    `half_gram` and `half_tokens` and `layer_weight_norms` at `norm_layer_depths`."""

    needs = frozenset({DOMAIN_LOSSES, GRADIENT_GRAM, LAYER_NORMS})
    reads = frozenset({
        "mixing_prior", "mixing_objective", "mixing_prior_pull", "mixing_kl_radius", "mixing_score_ema",
        "sketch_layers", "sketch_dim", "dga_interval",  # the target pass's interval, with --mixing-objective target
    })
    # 3: --acodm-reward published is the reference's per-domain reward with a critic of K outputs;
    # 2: the actor scales the alignment signal's bounded step (read: its states are as format 3's,
    # but for the published reward, which was one number); 1: the actor chose the weights itself.
    state_format = 3
    state_change = "its actor scales the alignment signal's bounded step"
    older_state_formats = (2,)

    def __init__(
        self,
        names: Sequence[str],
        initial_weights: Sequence[float],
        *,
        total_steps: int,
        seed: int,
        prior: Optional[Sequence[float]] = None,
        objective: Optional[Sequence[float]] = None,
        config: Optional[DDPGConfig] = None,
        hidden: int = 256,
        depth: int = 2,
        layer_depths: Optional[Sequence[float]] = None,
        stale_decay: Optional[float] = None,
        warmup_fraction: float = 0.1,
        score: str = "alignment",
        score_decay: float = 0.9,
        pull: float = 0.02,
        kl_radius: float = 0.25,
        max_step: float = 0.1,
        policy: Optional[FrozenPolicy] = None,
        export_path: Optional[str] = None,
        target_interval: int = 10,
        floor: float = 0.0,
    ):
        """`prior` (p0) and `objective` (pi) default to uniform; `score` "published" takes no
        objective. `policy` switches to proxy mode: the network, feature depths and stale decay are
        then the policy's, `hidden`, `depth` unused. `export_path`: where the actor goes at the end
        of the run (`end_of_run`)."""
        super().__init__(names, initial_weights, floor)
        if score == "published" and objective is not None:
            raise UserError("--acodm-reward published scores the domains against each other and reads no objective; drop --mixing-objective")
        if export_path is not None:
            check_output_file(export_path, "--acodm-export-policy", "policy.pt")
        self.export_path = export_path
        if not 0.0 <= warmup_fraction <= 1.0:
            raise UserError(f"--acodm-warmup-fraction must be in [0, 1], got {warmup_fraction}")
        uniform = numpy.full(self.num_domains, 1.0 / self.num_domains)
        self.prior = uniform if prior is None else numpy.asarray(prior, dtype=numpy.float64)
        objective = uniform if objective is None else objective
        # The target's |g_target|^2 comes from one pair of halves of a few examples: averaged over passes, as DGA's.
        self.signal = AlignmentSignal(objective, score_decay, score, num_domains=self.num_domains, smoothed_scale=len(objective) > self.num_domains)
        if self.signal.rows > self.num_domains:  # the objective is the target's row: measure it
            self.needs = type(self).needs | {TARGET_GRADIENT}
        self.target_interval = check_target_interval(target_interval)
        self.mirror = BoundedMirrorStep(self.prior, pull, kl_radius, max_step)
        self.config = config or DDPGConfig()
        self.policy = policy
        self.generator = torch.Generator().manual_seed(seed)
        if policy is None:
            self.spec = FeatureSpec(
                self.num_domains,
                tuple(layer_depths or DEFAULT_LAYER_DEPTHS),
                DEFAULT_STALE_DECAY if stale_decay is None else stale_decay,
            )
            self.network = NetworkConfig(self.spec.state_dim, self.num_domains, hidden, depth)
            reward_shape = (self.num_domains,) if score == "published" else ()
            with _one_thread():
                self.agent: Optional[DDPGAgent] = DDPGAgent(self.network, self.config, self.generator, self.action_map, reward_shape)
            self.warmup_steps = math.ceil(warmup_fraction * total_steps)
        else:
            self._check_policy_fits(policy, layer_depths, stale_decay)
            self.spec, self.network = policy.spec, policy.network
            self.agent, self.warmup_steps = None, 0
        self.norm_layer_depths = self.spec.layer_depths
        self.memory = SignalMemory(self.num_domains, self.spec.stale_decay)
        self.features = StateBuilder(self.spec, total_steps)
        self.steps_observed = 0
        self.last_state: Optional[numpy.ndarray] = None
        self.next_weights = self.prior.copy()  # the mixture of the next step (before --mixing-floor)

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

    def action_map(self, states: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
        """The next weights from states `[..., S]` and the actor's outputs `[..., K]`: the bounded
        mirror step from the state's weights, `max_step * sigmoid(output)` along its direction."""
        weights, direction = states[..., self.spec.block("weight")], states[..., self.spec.block("direction")]
        return self.mirror(weights.double(), self.mirror.max_step * torch.sigmoid(outputs.double()) * direction.double())

    @classmethod
    def add_arguments(cls, group: argparse._ArgumentGroup) -> None:
        defaults = DDPGConfig()
        add = group.add_argument
        add(
            "--acodm-reward",
            choices=SCORES,
            default="alignment",
            help="AC-ODM: the per-domain score behind its step and reward; alignment: <g_k, g_obj> of mean "
            "gradients with an unbiased diagonal; published: the reference code's reward, per domain the z-scored "
            "off-diagonal row sum of the mean gradients' Gram, with a critic of one output per domain (reads no --mixing-objective)",
        )
        add(
            "--acodm-max-step",
            type=float,
            default=0.1,
            help="AC-ODM: the largest change of any log-weight in one step",
        )
        add("--acodm-hidden", type=int, default=256, help="AC-ODM: width of the actor's and critic's hidden layers")
        add(
            "--acodm-depth",
            type=int,
            default=2,
            help="AC-ODM: hidden layers of the actor and the critic (the paper's: --acodm-hidden 1024 --acodm-depth 5)",
        )
        add(
            "--acodm-gamma",
            type=float,
            default=defaults.gamma,
            help="AC-ODM: discount of the critic's target (0: the critic fits the next reward only)",
        )
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
            help="AC-ODM: std of the Gaussian exploration noise on the actor's outputs",
        )
        add(
            "--acodm-warmup-fraction",
            type=float,
            default=0.1,
            help="AC-ODM: fraction of --train-iters in which only the critic learns (the actor acts, untrained)",
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
            help=f"AC-ODM: per-step decay in the staleness feature of a domain not sampled, in [0, 1); "
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
            help="AC-ODM proxy mode: this exported actor decides the steps, frozen (no critic, training or noise)",
        )

    @classmethod
    def from_args(
        cls,
        *,
        names: Sequence[str],
        initial_weights: Sequence[float],
        domain_tokens: Optional[Sequence[float]],
        args: argparse.Namespace,
        **_: Any,
    ) -> Mixer:
        total_steps = run_length(args, "acodm", "the state holds progress t/T, the warm-up is part of T")
        weighting = dict(names=names, data_path_weights=initial_weights, domain_tokens=domain_tokens)
        has_target = bool(getattr(args, "target_data_path", None))
        # --mixing-objective at its default (uniform) is no objective given; the published reward reads none
        objective_given = args.mixing_objective != "uniform"
        return cls(
            names,
            initial_weights,
            total_steps=total_steps,
            seed=args.seed,
            prior=mixing_prior(args, names, initial_weights, domain_tokens),
            objective=(
                objective_weighting(args.mixing_objective, **weighting, has_target=has_target)
                if objective_given or args.acodm_reward != "published"
                else None
            ),
            config=DDPGConfig(
                gamma=args.acodm_gamma,
                tau=args.acodm_tau,
                buffer_size=args.acodm_buffer_size,
                batch_size=args.acodm_batch_size,
                lr=args.acodm_lr,
                lr_warmup_steps=args.acodm_lr_warmup_steps,
                noise=args.acodm_noise,
            ),
            hidden=args.acodm_hidden,
            depth=args.acodm_depth,
            layer_depths=args.acodm_feature_depths,
            stale_decay=args.acodm_stale_decay,
            warmup_fraction=args.acodm_warmup_fraction,
            score=args.acodm_reward,
            score_decay=args.mixing_score_ema,
            pull=args.mixing_prior_pull,
            kl_radius=args.mixing_kl_radius,
            max_step=args.acodm_max_step,
            policy=load_policy(args.acodm_policy, names, args.acodm_reward) if args.acodm_policy else None,
            export_path=args.acodm_export_policy,
            target_interval=args.dga_interval,
            floor=args.mixing_floor,
        )

    def export_policy(self, path: str) -> None:
        """Write the actor with its feature spec to `path` (atomically), for `--acodm-policy` in another run."""
        actor = self.agent.actor if self.agent is not None else self.policy.actor
        save_policy(path, self.names, self.spec, self.network, actor, self.signal.score)

    def end_of_run(self, log: Callable[[str], None]) -> None:
        if self.export_path is not None:
            self.export_policy(self.export_path)
            log(f"wrote the AC-ODM policy to {self.export_path}")

    def _warming_up(self) -> bool:
        return self.steps_observed < self.warmup_steps

    def _policy(self) -> numpy.ndarray:
        return self.next_weights

    def domain_diagnostics(self) -> dict[str, numpy.ndarray]:
        return {"score": self.signal.scores(), "score_snr": self.signal.signal_to_noise()}

    def scalar_diagnostics(self) -> dict[str, float]:
        return {} if self.agent is None else {"critic_fit": self.agent.critic_fit}

    @staticmethod
    def _signal(value: Optional[numpy.ndarray], field: str, shape: tuple[int, ...], meaning: str) -> numpy.ndarray:
        if value is None:
            raise ValueError(f"AC-ODM needs StepSignals.{field} every step (see its `needs`); the trainer gave none")
        value = numpy.asarray(value, dtype=numpy.float64)
        if value.shape != shape:
            raise ValueError(f"StepSignals.{field} has shape {value.shape}, AC-ODM expects {shape}: {meaning}")
        return value

    def _update(self, signals: StepSignals) -> None:
        rows = sketch_rows(self.num_domains, with_target=self.signal.rows > self.num_domains)
        halves = f"two halves per domain of {self.names}" + (" and the target's" if self.signal.rows > self.num_domains else "")
        gram = self._signal(signals.half_gram, "half_gram", (rows, rows), halves)
        tokens = self._signal(signals.half_tokens, "half_tokens", (rows,), halves)
        norms = self._signal(
            signals.layer_weight_norms,
            "layer_weight_norms",
            (self.spec.num_layers,),
            f"one norm per relative depth of norm_layer_depths {list(self.norm_layer_depths)}",
        )
        used = self.next_weights
        present = (signals.realised_counts > 0) & (signals.domain_tokens > 0)
        with _one_thread():
            step_scores = self.signal.observe(gram, tokens)
            self.memory.update(present, signals.domain_loss)
            direction = self.signal.direction(used)
            state = self.features.state(self.memory, used, direction, self.signal.signal_to_noise(), norms, signals.step)
            if self.agent is not None:
                if self.last_state is not None and step_scores is not None:
                    self.agent.remember(self.last_state, used, self._reward(used, step_scores), state)
                    self.agent.update(train_actor=not self._warming_up())
                self.next_weights = self.agent.act(state, explore=True)
            else:
                self.next_weights = self.policy.act(state, self.action_map)
            self.steps_observed += 1
            self.last_state = state

    def _reward(self, used: numpy.ndarray, step_scores: numpy.ndarray) -> Reward:
        """The step's reward: the published per-domain vector as it is, or the alignment of the
        training gradient of weights `used` with the objective's, `sum_k w_k r_k`."""
        return step_scores if self.signal.score == "published" else float(used @ step_scores)

    def _state(self) -> dict[str, Any]:
        def tensor(value: Optional[numpy.ndarray]) -> Optional[torch.Tensor]:
            return None if value is None else torch.from_numpy(value.copy())

        return {
            "mode": "train" if self.policy is None else "proxy",
            "feature_spec": self.spec.to_dict(),
            "network": self.network.to_dict(),
            "steps_observed": self.steps_observed,
            "last_state": tensor(self.last_state),
            "next_weights": tensor(self.next_weights),
            "signal": self.signal.state_dict(),
            "memory": self.memory.state_dict(),
            "features": self.features.state_dict(),
            "generator": self.generator.get_state(),
            "agent": None if self.agent is None else self.agent.state_dict(),
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        if state["format"] == 2 and state["signal"]["score"] == "published":
            raise UserError(
                "the checkpoint's AC-ODM state is of format 2 with --acodm-reward published, whose reward was one "
                "number; this version's is the reference's, one per domain with a critic of as many outputs: finish "
                "that run with the version that wrote it, or start a new one"
            )
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
        self.steps_observed = int(state["steps_observed"])
        self.last_state = None if state["last_state"] is None else state["last_state"].numpy().copy()
        self.next_weights = state["next_weights"].numpy().copy()
        self.signal.load_state_dict(state["signal"])
        self.memory.load_state_dict(state["memory"])
        self.features.load_state_dict(state["features"])
        self.generator.set_state(state["generator"])
        if self.agent is not None:
            self.agent.load_state_dict(state["agent"])
