"""Proxy mode: an AC-ODM actor written to a file by one run and read, frozen, by another.

The file (torch.save of plain values and tensors, read back with `weights_only=True`) holds:
`format`, `version`, `domains` (names, in order), `reward` (the `--acodm-reward` it was trained
with), `feature_spec` (`FeatureSpec.to_dict`: the layout, which says the `--acodm-action`,
relative depths, normalisations, K, L, state dimension), `network` (`NetworkConfig.to_dict`) and
`actor` (the actor's state dict). Features are normalised and layers are chosen by relative depth,
so a target of another depth or width reads its own state with the proxy's spec; the domains must
be the same, in the same order, and the reward the same.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Sequence

import numpy
import torch

from megatron_acodm.atomic_files import atomic_write
from megatron_acodm.errors import UserError
from megatron_acodm.mixing.acodm.features import FeatureSpec
from megatron_acodm.mixing.acodm.ddpg import ActionMap
from megatron_acodm.mixing.acodm.networks import Actor, NetworkConfig

POLICY_FORMAT = "megatron-acodm/acodm-policy"
# 4: the spec names its layout, and so the action (the reference's softmax by default); 3: the file
# names its reward; 2: the actor scales the alignment signal's step; 1: softmax weights
POLICY_VERSION = 4
ACTIONS = {"softmax": "reference", "bounded": "scale-free"}  # --acodm-action: the state layout its actor reads
_EXPORT_FIX = "re-export it with --mixer acodm --acodm-export-policy"


class PolicyError(UserError):
    """A policy file that this run cannot use; the message names the file and the fix."""


class FrozenPolicy:
    """An exported actor: no critic, no training, no exploration noise."""

    def __init__(self, spec: FeatureSpec, network: NetworkConfig, actor: Actor):
        self.spec = spec
        self.network = network
        self.actor = actor.requires_grad_(False).eval()

    def act(self, state: numpy.ndarray, action_map: ActionMap) -> numpy.ndarray:
        """The next weights for `state`, float64 [K], through this run's `action_map`."""
        state_tensor = torch.from_numpy(state)
        with torch.no_grad():
            return action_map(state_tensor, self.actor(state_tensor.float()).double()).numpy()


def save_policy(path: str, names: Sequence[str], spec: FeatureSpec, network: NetworkConfig, actor: Actor, reward: str) -> None:
    """Write the policy file atomically: to a temporary file beside `path`, then renamed over it."""
    payload = {
        "format": POLICY_FORMAT,
        "version": POLICY_VERSION,
        "domains": list(names),
        "reward": reward,
        "feature_spec": spec.to_dict(),
        "network": network.to_dict(),
        "actor": {name: tensor.detach().clone() for name, tensor in actor.state_dict().items()},
    }
    with atomic_write(path, "wb") as stream:
        torch.save(payload, stream)


def load_policy(path: str, names: Sequence[str], reward: str) -> FrozenPolicy:
    """The policy in `path` for a run on domains `names` with `--acodm-reward` `reward`; PolicyError
    says what is wrong and how to fix it."""
    if not os.path.isfile(path):
        raise PolicyError(
            f"{path}: no such policy file; --acodm-policy takes the file a run wrote with --acodm-export-policy"
        )
    try:
        with warnings.catch_warnings():  # torch warns about a foreign pickle before it fails on it
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch's reasons run to many lines of advice that does not apply here
        raise PolicyError(f"{path}: not a readable AC-ODM policy ({type(error).__name__}); {_EXPORT_FIX}") from error
    if not isinstance(payload, dict) or payload.get("format") != POLICY_FORMAT:
        raise PolicyError(f"{path}: not an AC-ODM policy file (no format {POLICY_FORMAT!r}); {_EXPORT_FIX}")
    if payload.get("version") != POLICY_VERSION:
        raise PolicyError(
            f"{path}: policy format version {payload.get('version')!r}, this program reads version {POLICY_VERSION}; "
            f"{_EXPORT_FIX} of this program"
        )
    if payload.get("domains") != list(names):
        raise PolicyError(
            f"{path}: the policy was trained on domains {payload.get('domains')}, this run has {list(names)}; "
            f"give this run a --data-path with the same domains in the same order, or train its own policy"
        )
    if payload.get("reward") != reward:
        raise PolicyError(
            f"{path}: the policy was trained with --acodm-reward {payload.get('reward')}, this run has {reward}; "
            f"give this run --acodm-reward {payload.get('reward')}, or train its own policy"
        )
    return _build(path, payload)


def _build(path: str, payload: dict[str, Any]) -> FrozenPolicy:
    try:
        spec = FeatureSpec.from_dict(payload["feature_spec"])
        network = NetworkConfig(**payload["network"])
        if (network.state_dim, network.num_domains) != (spec.state_dim, spec.num_domains):
            raise ValueError(f"network {payload['network']} does not match feature spec {payload['feature_spec']}")
        actor = Actor(network, torch.Generator())  # the weights come from the file
        actor.load_state_dict(payload["actor"])
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise PolicyError(f"{path}: a damaged AC-ODM policy ({error}); {_EXPORT_FIX}") from error
    return FrozenPolicy(spec, network, actor)
