"""`--mixer acodm`: AC-ODM (arXiv 2505.23878), a DDPG actor-critic deciding each step's domain weights.

At its defaults, the method as the paper and its reference code (github.com/DANG-ai/AC-ODM) run it
(docs/DESIGN.md, "AC-ODM"). Each global step t, in `observe`:
1. the step's half-sketch Gram matrix gives the reward R_t (`alignment.published_rewards`): per
   domain, the off-diagonal row sum of the Gram of the domains' mean gradients over their mean
   norm, z-scored across the domains; the critic has one output per domain;
2. the state s_t (`features.py`, the reference layout) holds the step's losses and their change
   since the first step, the samples per domain, the norms of chosen layers and of their change
   since the run began, and progress;
3. the transition (s_{t-1}, w_t, R_t, s_t) enters the replay buffer and the agent makes one update;
4. the next weights: the actor's softmax w = mu(s_t), explored as the reference does: each weight
   less `noise` times a uniform draw in [0, 1) (clipped at 0 here, where the reference would let a
   weight go negative), renormalised.
Warm-up (the first `--acodm-warmup-fraction` of the steps): the weights are those of a teacher, ODM's
smoothed mean of exp(loss) with smoothing 0.5 (`ODMMixer`, `--odm-update smoothed-mean`, as the
reference's run configuration has it); each step's update fits the actor's weights to the teacher's
and the critic to (1 + gamma) R (`DDPGAgent.imitate`); at its end the target networks take the online
ones. Every step trains on at least one micro-batch of every domain, as the reference's does (the
default of `--min-samples-per-domain` under this mixer). The reference's actor never learns: both
its warm-up and its updates step the critic's optimizer after the actor's loss, so its weights are
the softmax of its initial network's reading of each state. That is the default here too (the
critic still learns, and `critic_fit` reports it).

Ours, as options:
- `--acodm-train-actor`: the actor learns as the paper describes, by its own optimizer: its
  warm-up fits it to the teacher's weights, and afterwards each update raises the critic's value of
  its action;
- `--acodm-reward alignment`: R_t = sum_k w_t,k r_t,k, the alignment of the step's training
  gradient with the objective's (`--mixing-objective`; its first-order decrease), with a critic of
  one output, in place of the published reward;
- `--acodm-action bounded`: the actor does not choose the weights but how far to follow the
  alignment signal (`mixing/alignment.py`): w_{t+1} = M(w_t, max_step * sigmoid(mu(s_t)) *
  direction), M the bounded mirror step towards the prior (`mixing/mirror_step.py`), so the weights
  never move more than `max_step` per step nor leave the KL ball, and a zero or pure-noise signal
  leaves them at the prior. Its state is the scale-free layout (`features.py`), which holds the
  weights and the direction the action is computed from; exploration is Gaussian noise of std
  `noise` on the actor's outputs, and during the warm-up the untrained actor acts and only the
  critic learns. With the published reward the direction comes from that reward, smoothed over
  the steps each domain was present, less the mixture's mean, in standard errors.

Proxy mode (`--acodm-policy FILE`): an actor another run exported decides the steps, frozen (no
critic, training or noise), after the same warm-up teacher as a trained run's for the softmax
action, from the first step for the bounded one; the target still measures its own signals.

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
from megatron_acodm.mixing.acodm.features import DEFAULT_LAYER_DEPTHS, DEFAULT_STALE_DECAY, FeatureSpec, StateBuilder, StepView
from megatron_acodm.mixing.acodm.memory import SignalMemory
from megatron_acodm.mixing.acodm.networks import NetworkConfig
from megatron_acodm.mixing.acodm.policy import ACTIONS, FrozenPolicy, load_policy, save_policy
from megatron_acodm.mixing.alignment import SCORES, AlignmentSignal
from megatron_acodm.mixing.base import (
    DOMAIN_LOSSES, GRADIENT_GRAM, LAYER_DRIFTS, LAYER_NORMS, TARGET_GRADIENT, Mixer, StepSignals, run_length,
)
from megatron_acodm.mixing.mirror_step import DEFAULT_KL_RADIUS, DEFAULT_PRIOR_PULL, BoundedMirrorStep
from megatron_acodm.mixing.odm import ODMMixer
from megatron_acodm.mixing.weighting import mixing_prior, objective_weighting
from megatron_acodm.mixing.dga import check_target_interval
from megatron_acodm.sketch.segments import sketch_rows

# The reference's exploration: each weight less this times a uniform draw; our bounded action's Gaussian std.
DEFAULT_NOISE = {"softmax": 1e-3, "bounded": 0.2}
TEACHER_SMOOTHING = 0.5  # the reference's data_sampling_smoothing_factor for its warm-up's ODM
# The reference's 834 of 41,667 steps: the warm-up and the learning rate's warm-up.
DEFAULT_WARMUP_FRACTION = 0.02
DEFAULT_MAX_STEP = 0.1  # --acodm-action bounded: chosen on the tuning corpus (bench/results/tuning.md)


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
    `half_gram` and `half_tokens`, and `layer_weight_norms` (with the reference state also
    `layer_weight_drifts`) at `norm_layer_depths`."""

    needs = frozenset({DOMAIN_LOSSES, GRADIENT_GRAM, LAYER_NORMS})
    reads = frozenset({
        "mixing_prior", "mixing_objective", "mixing_prior_pull", "mixing_kl_radius", "mixing_score_ema",
        "sketch_layers", "sketch_dim", "dga_interval",  # the target pass's interval, with --mixing-objective target
    })
    # 4: the reference's method by default (softmax actor, its state, the warm-up teacher);
    # 3: the actor scaled the alignment signal's bounded step, with the reference's per-domain reward.
    state_format = 4
    state_change = "its default is the reference's method: the actor's softmax is the mixture, the state the reference's"

    def __init__(
        self,
        names: Sequence[str],
        initial_weights: Sequence[float],
        *,
        total_steps: int,
        seed: int,
        action: str = "softmax",
        prior: Optional[Sequence[float]] = None,
        objective: Optional[Sequence[float]] = None,
        config: Optional[DDPGConfig] = None,
        hidden: int = 1024,
        depth: int = 5,
        layer_depths: Optional[Sequence[float]] = None,
        stale_decay: Optional[float] = None,
        warmup_fraction: float = DEFAULT_WARMUP_FRACTION,
        noise: Optional[float] = None,
        train_actor: bool = False,
        score: str = "published",
        score_decay: float = 0.9,
        pull: float = DEFAULT_PRIOR_PULL,
        kl_radius: float = DEFAULT_KL_RADIUS,
        max_step: float = DEFAULT_MAX_STEP,
        policy: Optional[FrozenPolicy] = None,
        export_path: Optional[str] = None,
        target_interval: int = 10,
        floor: float = 0.0,
    ):
        """`prior` (p0, where the weights start) and `objective` (pi) default to uniform; `score`
        "published" takes no objective. `config` defaults to the reference's constants, with the
        run's length as its schedule's. `policy` switches to proxy mode: the network, feature depths
        and stale decay are then the policy's, `hidden`, `depth` unused. `export_path`: where the
        actor goes at the end of the run (`end_of_run`)."""
        super().__init__(names, initial_weights, floor)
        if action not in ACTIONS:
            raise UserError(f"--acodm-action must be one of {', '.join(ACTIONS)}, got {action!r}")
        if score == "published" and objective is not None:
            raise UserError("--acodm-reward published scores the domains against each other and reads no objective; drop --mixing-objective, or give --acodm-reward alignment")
        if export_path is not None:
            check_output_file(export_path, "--acodm-export-policy", "policy.pt")
        self.export_path = export_path
        if not 0.0 <= warmup_fraction <= 1.0:
            raise UserError(f"--acodm-warmup-fraction must be in [0, 1], got {warmup_fraction}")
        self.noise = DEFAULT_NOISE[action] if noise is None else noise
        if self.noise < 0:
            raise UserError(f"--acodm-noise must be >= 0, got {self.noise}")
        self.action = action
        self.train_actor = train_actor
        uniform = numpy.full(self.num_domains, 1.0 / self.num_domains)
        self.prior = uniform if prior is None else numpy.asarray(prior, dtype=numpy.float64)
        objective = uniform if objective is None else objective
        # The target's |g_target|^2 comes from one pair of halves of a few examples: averaged over passes, as DGA's.
        self.signal = AlignmentSignal(objective, score_decay, score, num_domains=self.num_domains, smoothed_scale=len(objective) > self.num_domains)
        if self.signal.rows > self.num_domains:  # the objective is the target's row: measure it
            self.needs = self.needs | {TARGET_GRADIENT}
        self.target_interval = check_target_interval(target_interval)
        self.mirror = BoundedMirrorStep(self.prior, pull, kl_radius, max_step)
        self.policy = policy
        self.generator = torch.Generator().manual_seed(seed)
        self.warmup_steps = math.ceil(warmup_fraction * total_steps)
        if policy is None:
            self.spec = FeatureSpec(
                self.num_domains,
                tuple(layer_depths or DEFAULT_LAYER_DEPTHS),
                DEFAULT_STALE_DECAY if stale_decay is None else stale_decay,
                ACTIONS[action],
            )
            self.network = NetworkConfig(self.spec.state_dim, self.num_domains, hidden, depth)
            self.config = config or DDPGConfig(
                lr_warmup_updates=math.ceil(DEFAULT_WARMUP_FRACTION * total_steps), total_updates=total_steps
            )
            reward_shape = (self.num_domains,) if score == "published" else ()
            with _one_thread():
                self.agent: Optional[DDPGAgent] = DDPGAgent(self.network, self.config, self.generator, self.action_map, reward_shape)
        else:
            self._check_policy_fits(policy, action, layer_depths, stale_decay)
            self.spec, self.network, self.agent = policy.spec, policy.network, None
        if self.spec.layout == "reference":
            self.needs = self.needs | {LAYER_DRIFTS}
        # The reference's warm-up: its weights are those of ODM's smoothed mean, which the actor learns to imitate.
        self.teacher = (
            ODMMixer(names, self.prior, total_steps=total_steps, update="smoothed-mean", smoothing=TEACHER_SMOOTHING, warmup_fraction=0.0)
            if action == "softmax" and self.warmup_steps > 0
            else None
        )
        if action == "bounded" and policy is not None:
            self.warmup_steps = 0  # the frozen actor follows the signal from the first step
        self.norm_layer_depths = self.spec.layer_depths
        self.memory = SignalMemory(self.num_domains, self.spec.stale_decay)
        self.features = StateBuilder(self.spec, total_steps)
        self.steps_observed = 0
        self.last_state: Optional[numpy.ndarray] = None
        self.next_weights = self.prior.copy()  # the mixture of the next step (before --mixing-floor)

    @staticmethod
    def _check_policy_fits(
        policy: FrozenPolicy, action: str, layer_depths: Optional[Sequence[float]], stale_decay: Optional[float]
    ) -> None:
        trained_with = next(name for name, layout in ACTIONS.items() if layout == policy.spec.layout)
        if trained_with != action:
            raise UserError(
                f"the policy's actor was trained with --acodm-action {trained_with}, this run has {action}; "
                f"give this run --acodm-action {trained_with}"
            )
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
        """The next weights from states `[..., S]` and the actor's outputs `[..., K]`: their softmax,
        or the bounded mirror step from the state's weights, `max_step * sigmoid(output)` along its direction."""
        if self.action == "softmax":
            return torch.softmax(outputs.double(), dim=-1)
        weights, direction = states[..., self.spec.block("weight")], states[..., self.spec.block("direction")]
        return self.mirror(weights.double(), self.mirror.max_step * torch.sigmoid(outputs.double()) * direction.double())

    @classmethod
    def add_arguments(cls, group: argparse._ArgumentGroup) -> None:
        defaults = DDPGConfig()
        add = group.add_argument
        add(
            "--acodm-action",
            choices=list(ACTIONS),
            default="softmax",
            help="AC-ODM: softmax, the reference's: the actor's softmax is the next mixture, its state the reference's; "
            "bounded (ours): the actor scales the alignment signal's bounded mirror step from the last mixture "
            "(--acodm-max-step, --mixing-kl-radius, --mixing-prior-pull), with a scale-free state",
        )
        add(
            "--acodm-reward",
            choices=SCORES,
            default="published",
            help="AC-ODM: published, the reference code's reward: per domain the z-scored off-diagonal row sum of the "
            "mean gradients' Gram, with a critic of one output per domain (reads no --mixing-objective); alignment "
            "(ours): <g_k, g_obj> of mean gradients with an unbiased diagonal, weighted by the mixture",
        )
        add(
            "--acodm-max-step",
            type=float,
            default=DEFAULT_MAX_STEP,
            help="AC-ODM with --acodm-action bounded: the largest change of any log-weight in one step",
        )
        add("--acodm-hidden", type=int, default=1024, help="AC-ODM: width of the actor's and critic's hidden layers")
        add("--acodm-depth", type=int, default=5, help="AC-ODM: hidden layers of the actor and the critic")
        add(
            "--acodm-gamma",
            type=float,
            default=defaults.gamma,
            help="AC-ODM: discount of the critic's target (0: the critic fits the next reward only)",
        )
        add("--acodm-tau", type=float, default=defaults.tau, help="AC-ODM: soft update rate of the target networks")
        add("--acodm-buffer-size", type=int, default=defaults.buffer_size, help="AC-ODM: replay buffer capacity")
        add("--acodm-batch-size", type=int, default=defaults.batch_size, help="AC-ODM: transitions per update")
        add("--acodm-lr", type=float, default=defaults.lr, help="AC-ODM: the agent's peak learning rate (AdamW)")
        add("--acodm-min-lr", type=float, default=defaults.min_lr, help="AC-ODM: the floor of the learning rate's cosine decay")
        add(
            "--acodm-lr-warmup-fraction",
            type=float,
            default=DEFAULT_WARMUP_FRACTION,
            help="AC-ODM: the fraction of --train-iters over which the agent's learning rate rises linearly to --acodm-lr",
        )
        add("--acodm-weight-decay", type=float, default=defaults.weight_decay, help="AC-ODM: AdamW's weight decay of the agent")
        add(
            "--acodm-noise",
            type=float,
            default=None,
            help=f"AC-ODM: exploration; softmax: each weight less this times a uniform draw in [0, 1), renormalised "
            f"(default {DEFAULT_NOISE['softmax']}); bounded: the std of Gaussian noise on the actor's outputs "
            f"(default {DEFAULT_NOISE['bounded']})",
        )
        add(
            "--acodm-train-actor",
            action="store_true",
            help="AC-ODM (ours): the actor learns, by its own optimizer, as the paper describes; the reference code's "
            "actor never changes (its updates step the critic's optimizer), so by default it does not",
        )
        add(
            "--acodm-warmup-fraction",
            type=float,
            default=DEFAULT_WARMUP_FRACTION,
            help="AC-ODM: the first fraction of --train-iters; softmax: ODM's smoothed mean decides the weights and the "
            "actor learns to imitate it; bounded: only the critic learns (the actor acts, untrained)",
        )
        add(
            "--acodm-feature-depths",
            type=_relative_depths,
            default=None,
            help=f"AC-ODM: relative depths of the layers whose linear_fc2 weights the state reads; "
            f"default {','.join(map(str, DEFAULT_LAYER_DEPTHS))} (the reference's 9 of 16 layers), or the policy's with --acodm-policy",
        )
        add(
            "--acodm-stale-decay",
            type=float,
            default=None,
            help=f"AC-ODM with --acodm-action bounded: per-step decay in the staleness feature of a domain not "
            f"sampled, in [0, 1); default {DEFAULT_STALE_DECAY}, or the policy's with --acodm-policy",
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
    def samples_per_domain(cls, args: argparse.Namespace) -> int:
        """One micro-batch of every domain in every step, as the reference trains."""
        return args.micro_batch_size

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
        total_steps = run_length(args, "acodm", "the state holds progress t/T, the warm-up and the agent's schedule are parts of T")
        weighting = dict(names=names, data_path_weights=initial_weights, domain_tokens=domain_tokens)
        has_target = bool(getattr(args, "target_data_path", None))
        # --mixing-objective at its default (uniform) is no objective given; the published reward reads none
        objective_given = args.mixing_objective != "uniform"
        if not 0.0 <= args.acodm_lr_warmup_fraction <= 1.0:
            raise UserError(f"--acodm-lr-warmup-fraction must be in [0, 1], got {args.acodm_lr_warmup_fraction}")
        return cls(
            names,
            initial_weights,
            total_steps=total_steps,
            seed=args.seed,
            action=args.acodm_action,
            # the reference starts from the corpus's own mixture (the Pile's weights); our bounded step
            # is pulled back to its prior all run, and a corpus's own mixture may be mostly noise
            prior=mixing_prior(args, names, initial_weights, domain_tokens,
                               published="tokens" if args.acodm_action == "softmax" else "uniform"),
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
                min_lr=args.acodm_min_lr,
                lr_warmup_updates=math.ceil(args.acodm_lr_warmup_fraction * total_steps),
                total_updates=total_steps,
                weight_decay=args.acodm_weight_decay,
            ),
            hidden=args.acodm_hidden,
            depth=args.acodm_depth,
            layer_depths=args.acodm_feature_depths,
            stale_decay=args.acodm_stale_decay,
            warmup_fraction=args.acodm_warmup_fraction,
            noise=args.acodm_noise,
            train_actor=args.acodm_train_actor,
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
        layers = f"one per relative depth of norm_layer_depths {list(self.norm_layer_depths)}"
        norms = self._signal(signals.layer_weight_norms, "layer_weight_norms", (self.spec.num_layers,), layers)
        drifts = None
        if LAYER_DRIFTS in self.needs:
            drifts = self._signal(signals.layer_weight_drifts, "layer_weight_drifts", (self.spec.num_layers,), layers)
        used = self.next_weights
        present = (signals.realised_counts > 0) & (signals.domain_tokens > 0)
        warming_up = self.steps_observed < self.warmup_steps
        with _one_thread():
            step_scores = self.signal.observe(gram, tokens)
            self.memory.update(present, signals.domain_loss)
            view = StepView(self.memory, signals.step, norms, signals.realised_counts, drifts)
            if self.spec.layout == "scale-free":
                view.weights, view.direction, view.snr = used, self.signal.direction(used), self.signal.signal_to_noise()
            state = self.features.state(view)
            if self.teacher is not None and warming_up:
                self.teacher.observe(signals)
            if self.agent is not None and self.last_state is not None and step_scores is not None:
                self.agent.remember(self.last_state, used, self._reward(used, step_scores), state)
                if warming_up and self.teacher is not None:
                    self.agent.imitate(train_actor=self.train_actor)
                else:
                    self.agent.update(train_actor=self.train_actor and not warming_up)
            self.steps_observed += 1
            self.last_state = state
            if self.agent is not None and self.teacher is not None and self.steps_observed == self.warmup_steps:
                self.agent.copy_to_targets()  # the warm-up ends: the reference's start of its targets
            self.next_weights = self._next_weights(state)

    def _next_weights(self, state: numpy.ndarray) -> numpy.ndarray:
        """The mixture of the step after `steps_observed` steps: the teacher's during the warm-up,
        then the actor's (explored while it trains)."""
        if self.teacher is not None and self.steps_observed < self.warmup_steps:
            return self.teacher.weights()
        if self.agent is None:
            return self.policy.act(state, self.action_map)
        outputs = self.agent.outputs(state)
        state_tensor = torch.from_numpy(state)
        if self.action == "bounded":
            noise = torch.randn(outputs.shape, generator=self.generator, dtype=torch.float64)
            return self.action_map(state_tensor, outputs + self.noise * noise).numpy()
        weights = self.action_map(state_tensor, outputs)
        explored = torch.clamp(weights - self.noise * torch.rand(weights.shape, generator=self.generator, dtype=torch.float64), min=0.0)
        return (explored / explored.sum()).numpy()

    def _reward(self, used: numpy.ndarray, step_scores: numpy.ndarray) -> Reward:
        """The step's reward: the published per-domain vector as it is, or the alignment of the
        training gradient of weights `used` with the objective's, `sum_k w_k r_k`."""
        return step_scores if self.signal.score == "published" else float(used @ step_scores)

    def _state(self) -> dict[str, Any]:
        def tensor(value: Optional[numpy.ndarray]) -> Optional[torch.Tensor]:
            return None if value is None else torch.from_numpy(value.copy())

        return {
            "mode": "train" if self.policy is None else "proxy",
            "action": self.action,
            "feature_spec": self.spec.to_dict(),
            "network": self.network.to_dict(),
            "steps_observed": self.steps_observed,
            "last_state": tensor(self.last_state),
            "next_weights": tensor(self.next_weights),
            "signal": self.signal.state_dict(),
            "memory": self.memory.state_dict(),
            "features": self.features.state_dict(),
            "generator": self.generator.get_state(),
            "teacher": None if self.teacher is None else self.teacher.state_dict(),
            "agent": None if self.agent is None else self.agent.state_dict(),
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        mode = "train" if self.policy is None else "proxy"
        if state["mode"] != mode:
            raise UserError(
                f"the AC-ODM state is from {state['mode']} mode, this run's is {mode} (see --acodm-policy)"
            )
        for key, current in (("action", self.action), ("feature_spec", self.spec.to_dict()), ("network", self.network.to_dict())):
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
        if self.teacher is not None:
            self.teacher.load_state_dict(state["teacher"])
        if self.agent is not None:
            self.agent.load_state_dict(state["agent"])
