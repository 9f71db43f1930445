"""DDPG (Lillicrap et al. 2015) for AC-ODM: replay buffer, actor and critic with target networks.

Each update samples a batch of transitions (s, a, R, s') and
- regresses the critic on y = R + gamma Q'(s', mu'(s')) (primes: the target networks);
- either clones the actor towards the batch's actions (the warm-up, whose actions are ODM's) by
  cross-entropy, or raises Q(s, mu(s)): the actor's loss -Q(s, mu(s)), stepped by the ACTOR's
  optimizer (the published code steps the critic's there, so its actor never learns);
- moves the target networks towards the online ones by tau.
Both optimizers are Adam with a linear learning-rate warm-up over the first updates. All
randomness (initialisation, exploration noise, replay sampling) comes from one torch.Generator.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, NamedTuple, Optional

import numpy
import torch
from torch import nn

from megatron_acodm.errors import UserError
from megatron_acodm.mixing.acodm.networks import Actor, Critic, NetworkConfig, floored_softmax


@dataclass(frozen=True)
class DDPGConfig:
    gamma: float = 0.95
    tau: float = 1e-3
    buffer_size: int = 10000
    batch_size: int = 32
    lr: float = 1e-4
    lr_warmup_steps: int = 100
    noise: float = 0.2  # std of the Gaussian added to the actor's logits while it trains
    floor: Optional[float] = None  # every action entry >= floor, in [0, 1/K]; None: 1 / (10 K)

    def __post_init__(self) -> None:
        checks = [
            (0.0 <= self.gamma < 1.0, f"--acodm-gamma must be in [0, 1), got {self.gamma}"),
            (0.0 < self.tau <= 1.0, f"--acodm-tau must be in (0, 1], got {self.tau}"),
            (self.buffer_size >= 1, f"--acodm-buffer-size must be >= 1, got {self.buffer_size}"),
            (self.batch_size >= 1, f"--acodm-batch-size must be >= 1, got {self.batch_size}"),
            (self.lr > 0, f"--acodm-lr must be > 0, got {self.lr}"),
            (self.lr_warmup_steps >= 0, f"--acodm-lr-warmup-steps must be >= 0, got {self.lr_warmup_steps}"),
            (self.noise >= 0, f"--acodm-noise must be >= 0, got {self.noise}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)

    def action_floor(self, num_domains: int) -> float:
        floor = 1.0 / (10 * num_domains) if self.floor is None else self.floor
        if not 0.0 <= floor <= 1.0 / num_domains:
            raise UserError(f"--acodm-floor must be in [0, 1/K] = [0, {1.0 / num_domains:.4g}], got {floor}")
        return floor


class Transitions(NamedTuple):
    states: torch.Tensor  # [B, S]
    actions: torch.Tensor  # [B, K]
    rewards: torch.Tensor  # [B]
    next_states: torch.Tensor  # [B, S]


class ReplayBuffer:
    """A ring of the last `capacity` transitions, sampled uniformly with replacement."""

    def __init__(self, capacity: int, state_dim: int, num_domains: int):
        self.capacity = capacity
        self.states = torch.zeros(capacity, state_dim)
        self.actions = torch.zeros(capacity, num_domains)
        self.rewards = torch.zeros(capacity)
        self.next_states = torch.zeros(capacity, state_dim)
        self.size = 0
        self.position = 0  # where the next transition goes

    def add(self, state: numpy.ndarray, action: numpy.ndarray, reward: float, next_state: numpy.ndarray) -> None:
        row = self.position
        self.states[row] = torch.from_numpy(state)
        self.actions[row] = torch.from_numpy(action)
        self.rewards[row] = reward
        self.next_states[row] = torch.from_numpy(next_state)
        self.position = (row + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int, generator: torch.Generator) -> Transitions:
        rows = torch.randint(self.size, (batch_size,), generator=generator)
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
    """Actor, critic, their target networks and optimizers, and the replay buffer."""

    def __init__(self, network: NetworkConfig, config: DDPGConfig, generator: torch.Generator):
        self.config = config
        self.floor = config.action_floor(network.num_domains)
        self.generator = generator
        self.actor = Actor(network, generator)
        self.critic = Critic(network, generator)
        self.target_actor = copy.deepcopy(self.actor).requires_grad_(False)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=config.lr)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=config.lr)
        self.buffer = ReplayBuffer(config.buffer_size, network.state_dim, network.num_domains)
        self.updates = 0

    def act(self, state: numpy.ndarray, explore: bool) -> numpy.ndarray:
        """The action for `state`, float64 [K]; with `explore`, Gaussian noise on the logits first."""
        with torch.no_grad():
            logits = self.actor(torch.from_numpy(state).float()).double()
        if explore and self.config.noise > 0:
            logits = logits + self.config.noise * torch.randn(
                logits.shape, generator=self.generator, dtype=torch.float64
            )
        return floored_softmax(logits, self.floor).numpy()

    def remember(self, state: numpy.ndarray, action: numpy.ndarray, reward: float, next_state: numpy.ndarray) -> None:
        self.buffer.add(state, action, reward, next_state)

    def update(self, clone: bool) -> tuple[float, float]:
        """One critic step and one actor step on a sampled batch; returns (critic loss, actor loss).

        The actor's loss is the cross-entropy to the batch's actions when `clone`, else -Q(s, mu(s)).
        """
        batch = self.buffer.sample(self.config.batch_size, self.generator)
        learning_rate = self.config.lr * min(1.0, (self.updates + 1) / max(1, self.config.lr_warmup_steps))
        for optimizer in (self.actor_optimizer, self.critic_optimizer):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate
        critic_loss = self._update_critic(batch)
        actor_loss = self._clone_actor(batch) if clone else self._improve_actor(batch)
        _soft_update(self.target_actor, self.actor, self.config.tau)
        _soft_update(self.target_critic, self.critic, self.config.tau)
        self.updates += 1
        return critic_loss, actor_loss

    def _action(self, actor: nn.Module, states: torch.Tensor) -> torch.Tensor:
        return floored_softmax(actor(states), self.floor)

    def _update_critic(self, batch: Transitions) -> float:
        with torch.no_grad():
            next_q = self.target_critic(batch.next_states, self._action(self.target_actor, batch.next_states))
            target = batch.rewards + self.config.gamma * next_q
        loss = nn.functional.mse_loss(self.critic(batch.states, batch.actions), target)
        self.critic_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_optimizer.step()
        return loss.item()

    def _improve_actor(self, batch: Transitions) -> float:
        loss = -self.critic(batch.states, self._action(self.actor, batch.states)).mean()
        self.actor_optimizer.zero_grad(set_to_none=True)
        loss.backward()  # also leaves gradients on the critic; its next update zeroes them first
        self.actor_optimizer.step()
        return loss.item()

    def _clone_actor(self, batch: Transitions) -> float:
        log_policy = torch.log_softmax(self.actor(batch.states), dim=-1)
        loss = -(batch.actions * log_policy).sum(dim=-1).mean()
        self.actor_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.actor_optimizer.step()
        return loss.item()

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
            }
        )

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = copy.deepcopy(state)  # the optimizers would otherwise share tensors with `state`
        parts = ("actor", "critic", "target_actor", "target_critic", "actor_optimizer", "critic_optimizer", "buffer")
        for name in parts:
            getattr(self, name).load_state_dict(state[name])
        self.updates = int(state["updates"])
