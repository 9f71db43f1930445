"""The merged model `theta(a) = theta_base + sum_k a_k (theta_k - theta_base)`, in memory, shard by shard.

Every rank loads its own shards of the base and of each expert at the run's tensor- and
pipeline-parallel layout (megatron.core's dist_checkpointing), keeps the base and the experts'
differences from it in float32, and writes the merge for a mixture into the model's own
parameters; nothing is retrained and nothing is written to disk. Tensors that are not floating
point (none in a GPT, extra states where Transformer Engine keeps them) are the base's.
Memory: (K + 1) float32 copies of this rank's shard of the model.
"""

from __future__ import annotations

from typing import Sequence

import torch

from megatron_acodm.training.checkpoint import load_model_state


def _floating(value) -> bool:
    return isinstance(value, torch.Tensor) and value.is_floating_point()


class MergedModel:
    def __init__(self, model, base_path: str, expert_paths: Sequence[str]):
        self.model = model
        # dist_checkpointing may load into the model's own tensors: each state is copied before the next load.
        base = load_model_state(base_path, model)
        self.dtypes = {name: value.dtype for name, value in base.items() if _floating(value)}
        self.base = {name: base[name].detach().float().clone() for name in self.dtypes}
        self.others = {name: value for name, value in base.items() if name not in self.dtypes}
        self.deltas = []
        for path in expert_paths:
            expert = load_model_state(path, model)
            self.deltas.append({name: expert[name].detach().float() - self.base[name] for name in self.dtypes})

    @property
    def num_experts(self) -> int:
        return len(self.deltas)

    def set_mixture(self, mixture: Sequence[float]) -> None:
        """Put `theta(mixture)` into the model (mixture weights need not sum to one: 0 gives the base)."""
        if len(mixture) != self.num_experts:
            raise ValueError(f"a mixture over {len(mixture)} domains for {self.num_experts} experts")
        merged = dict(self.others)
        for name, base in self.base.items():
            value = base.clone()
            for weight, delta in zip(mixture, self.deltas):
                if weight != 0:
                    value.add_(delta[name], alpha=float(weight))
            merged[name] = value.to(self.dtypes[name])
        with torch.no_grad():
            self.model[0].module.load_state_dict(merged)
