"""DDPG (Lillicrap et al. 2015) for AC-ODM: replay buffer, actor and critic with target networks.

The action is not the actor's output itself: `action_map(states, outputs)` turns the actor's
per-domain outputs into the next weights (a softmax, or AC-ODM's bounded mirror step, see
`mixer.py`), and the critic judges those weights. The reward R is a number, or with `--acodm-reward
published` a vector of one value per domain, as the reference's; the critic then has as many
outputs. Each update samples a batch of transitions (s, a, R, s') and
- regresses the critic on y = R + gamma Q'(s', a'(s')) (primes: the target networks; per domain for
  a vector reward), by the mean squared error over the batch (and the domains);
- when the actor trains, raises the mean of Q(s, action_map(s, mu(s))) (over the domains too): the
  actor's loss, stepped by the actor's optimizer (the reference code steps the critic's there, so
  its actor never learns: `mixer.py` follows it unless told `--acodm-train-actor`);
- moves the target networks towards the online ones by tau.
`imitate` is the reference's warm-up update instead: the critic fitted to (1 + gamma) R and, when
the actor trains, its weights to the batch's actions (the warm-up teacher's), by mean squared error.
Both optimizers are AdamW with the reference's learning rate: a linear warm-up over the first
updates, then a cosine decay over the run (`learning_rate`). All randomness (initialisation,
replay sampling) comes from one torch.Generator.

Whether the critic fits is measured, not assumed: before a transition enters the buffer, the
critic's squared error on its target (a transition it has not trained on) and that of a constant
predictor (the moving mean of the targets) are averaged (a vector's over its components);
`critic_fit` = 1 - their ratio, above 0 when the critic predicts better than a constant.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Union

import numpy
import torch
from torch import nn

from megatron_acodm.errors import UserError
from megatron_acodm.mixing.acodm.networks import Actor, Critic, NetworkConfig

ActionMap = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (states, actor outputs) -> weights
Reward = Union[float, numpy.ndarray]  # a number, or one value per domain (`--acodm-reward published`)
_FIT_DECAY = 0.98  # moving average of the held-out errors: about the last 50 transitions


@dataclass(frozen=True)
class DDPGConfig:
    """The reference's constants by default (its ddpg.yml, and the weight decay of its model configs)."""

    gamma: float = 0.95
    tau: float = 1e-3
    buffer_size: int = 10000
    batch_size: int = 32
    lr: float = 0.01
    min_lr: float = 0.001
    lr_warmup_updates: int = 0
    total_updates: int = 1
    weight_decay: float = 0.1

    def __post_init__(self) -> None:
        checks = [
            (0.0 <= self.gamma < 1.0, f"--acodm-gamma must be in [0, 1), got {self.gamma}"),
            (0.0 < self.tau <= 1.0, f"--acodm-tau must be in (0, 1], got {self.tau}"),
            (self.buffer_size >= 1, f"--acodm-buffer-size must be >= 1, got {self.buffer_size}"),
            (self.batch_size >= 1, f"--acodm-batch-size must be >= 1, got {self.batch_size}"),
            (self.lr > 0, f"--acodm-lr must be > 0, got {self.lr}"),
            (0 <= self.min_lr <= self.lr, f"--acodm-min-lr must be in [0, --acodm-lr], got {self.min_lr}"),
            (self.lr_warmup_updates >= 0, f"the AC-ODM learning-rate warm-up must be >= 0 updates, got {self.lr_warmup_updates}"),
            (self.weight_decay >= 0, f"--acodm-weight-decay must be >= 0, got {self.weight_decay}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)


def learning_rate(config: DDPGConfig, update: int) -> float:
    """The rate of 0-based update `update`, as the reference's schedule (GPT-NeoX's AnnealingLR,
    cosine) gives it: `lr * n' / W` while n <= W warm-up updates, then `lr / 2 (cos(pi (n' - W) / T) + 1)`,
    with `n' = min(n, T - W)` and T the run's updates, never below `min_lr`. (Update 0 has rate 0.)"""
    warmup, total = config.lr_warmup_updates, config.total_updates
    progress = min(update, total - warmup)
    if warmup > 0 and update <= warmup:
        return config.lr * progress / warmup
    decayed = config.lr / 2.0 * (math.cos(math.pi * (progress - warmup) / total) + 1.0)
    return max(decayed, config.min_lr)


class Transitions(NamedTuple):
    states: torch.Tensor  # [B, S]
    actions: torch.Tensor  # [B, K]
    rewards: torch.Tensor  # [B, *reward_shape]
    next_states: torch.Tensor  # [B, S]


class ReplayBuffer:
    """A ring of the last `capacity` transitions, sampled as the reference samples its pool: a batch
    of distinct transitions once it holds one, before that all it holds and uniform draws for the rest."""

    def __init__(self, capacity: int, state_dim: int, num_domains: int, reward_shape: tuple[int, ...] = ()):
        self.capacity = capacity
        self.states = torch.zeros(capacity, state_dim)
        self.actions = torch.zeros(capacity, num_domains)
        self.rewards = torch.zeros(capacity, *reward_shape)
        self.next_states = torch.zeros(capacity, state_dim)
        self.size = 0
        self.position = 0  # where the next transition goes

    def add(self, state: numpy.ndarray, action: numpy.ndarray, reward: Reward, next_state: numpy.ndarray) -> None:
        row = self.position
        self.states[row] = torch.from_numpy(state)
        self.actions[row] = torch.from_numpy(action)
        self.rewards[row] = torch.as_tensor(reward)
        self.next_states[row] = torch.from_numpy(next_state)
        self.position = (row + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int, generator: torch.Generator) -> Transitions:
        if self.size >= batch_size:
            rows = torch.randperm(self.size, generator=generator)[:batch_size]
        else:
            rows = torch.cat([torch.arange(self.size), torch.randint(self.size, (batch_size - self.size,), generator=generator)])
        return Transitions(self.states[rows], self.actions[rows], self.rewards[rows], self.next_states[rows])

    def state_dict(self) -> dict[str, Any]:
        filled = slice(0, self.size)
        return {
            "states": self.states[filled].clone(),
            "actions": self.actions[filled].clone(),
            "rewards": self.rewards[filled].clone(),
            "next_states": self.next_states[filled].clone(),
            "position": self.position,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.size = len(state["rewards"])
        if self.size > self.capacity:
            raise UserError(
                f"the saved replay buffer holds {self.size} transitions, --acodm-buffer-size is {self.capacity}"
            )
        for name in ("states", "actions", "rewards", "next_states"):
            getattr(self, name)[: self.size] = state[name]
        self.position = int(state["position"])


def _soft_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    with torch.no_grad():
        for target_parameter, parameter in zip(target.parameters(), online.parameters()):
            target_parameter.lerp_(parameter, tau)


class DDPGAgent:
    """Actor, critic, their target networks and optimizers, the replay buffer, and the critic's fit."""

    def __init__(
        self,
        network: NetworkConfig,
        config: DDPGConfig,
        generator: torch.Generator,
        action_map: ActionMap,
        reward_shape: tuple[int, ...] = (),
    ):
        self.config = config
        self.generator = generator
        self.action_map = action_map
        self.actor = Actor(network, generator)
        self.critic = Critic(network, generator, reward_shape)
        self.target_actor = copy.deepcopy(self.actor).requires_grad_(False)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_optimizer = torch.optim.AdamW(self.actor.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.critic_optimizer = torch.optim.AdamW(self.critic.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.buffer = ReplayBuffer(config.buffer_size, network.state_dim, network.num_domains, reward_shape)
        self.updates = 0
        # moving averages: the critic's and a constant's squared error on unseen targets, the targets' mean
        # (one entry per reward component), and the averages' weight
        self.fit = torch.zeros(3 + math.prod(reward_shape), dtype=torch.float64)

    def outputs(self, state: numpy.ndarray) -> torch.Tensor:
        """The actor's outputs for `state`, float64 [K]."""
        with torch.no_grad():
            return self.actor(torch.from_numpy(state).float()).double()

    def remember(self, state: numpy.ndarray, action: numpy.ndarray, reward: Reward, next_state: numpy.ndarray) -> None:
        """Score the critic on the transition it has not seen, then store it."""
        with torch.no_grad():
            rewards = torch.as_tensor(reward, dtype=torch.float32)[None]
            target = self._targets(rewards, torch.from_numpy(next_state).float()[None])[0].double().reshape(-1)
            predicted = self.critic(torch.from_numpy(state)[None].float(), torch.from_numpy(action)[None].float())[0]
            predicted = predicted.double().reshape(-1)
        # fit: critic error, constant error, then the targets' mean (one per component), then the weight
        critic_error, constant_error, weight = self.fit[0], self.fit[1], self.fit[-1]
        target_mean = self.fit[2:-1]
        if weight > 0:  # the constant predictor is the mean of the targets seen before this one
            constant = target_mean / weight
            critic_error = _FIT_DECAY * critic_error + (1 - _FIT_DECAY) * ((predicted - target) ** 2).mean()
            constant_error = _FIT_DECAY * constant_error + (1 - _FIT_DECAY) * ((constant - target) ** 2).mean()
        target_mean = _FIT_DECAY * target_mean + (1 - _FIT_DECAY) * target
        weight = _FIT_DECAY * weight + (1 - _FIT_DECAY)
        self.fit = torch.cat([torch.stack([critic_error, constant_error]), target_mean, weight[None]])
        self.buffer.add(state, action, reward, next_state)

    @property
    def critic_fit(self) -> float:
        """1 - (critic's held-out squared error) / (a constant's): > 0 when the critic predicts; NaN before two transitions."""
        critic_error, constant_error = self.fit[0].item(), self.fit[1].item()
        return 1.0 - critic_error / constant_error if constant_error > 0 else float("nan")

    def update(self, train_actor: bool) -> tuple[float, float]:
        """One critic step and, with `train_actor`, one actor step on a sampled batch; returns the
        critic's loss and the actor's (-Q, NaN when it did not train)."""
        batch = self._sample()
        critic_loss = self._update_critic(batch)
        actor_loss = self._improve_actor(batch) if train_actor else float("nan")
        _soft_update(self.target_actor, self.actor, self.config.tau)
        _soft_update(self.target_critic, self.critic, self.config.tau)
        return critic_loss, actor_loss

    def imitate(self, train_actor: bool) -> tuple[float, float]:
        """The reference's warm-up update on a sampled batch: the critic fitted to (1 + gamma) R and,
        with `train_actor`, the actor's weights to the batch's actions; the target networks stay.
        Returns both losses (the actor's NaN when it did not train)."""
        batch = self._sample()
        target = (1.0 + self.config.gamma) * batch.rewards
        critic_loss = self._step(self.critic_optimizer, nn.functional.mse_loss(self.critic(batch.states, batch.actions), target))
        if not train_actor:
            return critic_loss, float("nan")
        return critic_loss, self._step(self.actor_optimizer, nn.functional.mse_loss(self._action(self.actor, batch.states), batch.actions))

    def copy_to_targets(self) -> None:
        """The target networks become the online ones (the reference's end of its warm-up)."""
        self.target_actor.load_state_dict(self.actor.state_dict())
        self.target_critic.load_state_dict(self.critic.state_dict())

    def _sample(self) -> Transitions:
        """A batch, with this update's learning rate set on both optimizers."""
        rate = learning_rate(self.config, self.updates)
        for optimizer in (self.actor_optimizer, self.critic_optimizer):
            for group in optimizer.param_groups:
                group["lr"] = rate
        self.updates += 1
        return self.buffer.sample(self.config.batch_size, self.generator)

    @staticmethod
    def _step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> float:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # the actor's loss also leaves gradients on the critic; its next step zeroes them first
        optimizer.step()
        return loss.item()

    def _action(self, actor: nn.Module, states: torch.Tensor) -> torch.Tensor:
        return self.action_map(states.double(), actor(states).double()).float()

    def _targets(self, rewards: torch.Tensor, next_states: torch.Tensor) -> torch.Tensor:
        if self.config.gamma == 0:
            return rewards
        next_q = self.target_critic(next_states, self._action(self.target_actor, next_states))
        return rewards + self.config.gamma * next_q

    def _update_critic(self, batch: Transitions) -> float:
        with torch.no_grad():
            target = self._targets(batch.rewards, batch.next_states)
        return self._step(self.critic_optimizer, nn.functional.mse_loss(self.critic(batch.states, batch.actions), target))

    def _improve_actor(self, batch: Transitions) -> float:
        return self._step(self.actor_optimizer, -self.critic(batch.states, self._action(self.actor, batch.states)).mean())

    def state_dict(self) -> dict[str, Any]:
        """Everything an exact continuation needs except the generator (its owner saves that)."""
        return copy.deepcopy(
            {
                "actor": self.actor.state_dict(),
                "critic": self.critic.state_dict(),
                "target_actor": self.target_actor.state_dict(),
                "target_critic": self.target_critic.state_dict(),
                "actor_optimizer": self.actor_optimizer.state_dict(),
                "critic_optimizer": self.critic_optimizer.state_dict(),
                "buffer": self.buffer.state_dict(),
                "updates": self.updates,
                "fit": self.fit,
            }
        )

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = copy.deepcopy(state)  # the optimizers would otherwise share tensors with `state`
        parts = ("actor", "critic", "target_actor", "target_critic", "actor_optimizer", "critic_optimizer", "buffer")
        for name in parts:
            getattr(self, name).load_state_dict(state[name])
        self.updates = int(state["updates"])
        self.fit = state["fit"]
