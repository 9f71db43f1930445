"""Per-domain gradient sketches of chosen layers' `mlp.linear_fc2` weights, read off by hooks.

A forward hook on each chosen `linear_fc2` keeps its input x (a reference: autograd keeps x alive
for the weight gradient anyway) and the sketch row of every token, and hangs a hook on the layer's
output tensor; when backward reaches that output the hook receives delta (the output gradient),
adds the micro-batch's `[rows, k]` to the step's sketch and lets go of x. Each delta meets the x of
its own forward, whatever order the schedule runs micro-batches in (no FIFO to keep in step), and
forwards without gradient (evaluation) cost nothing.

A rank's sketch is the sum over the chosen layers it holds (each layer shard with its own
independent probes), so `<S_a, S_b> / k` estimates the sum over layers of `<G_a, G_b>`, and one
all-reduce over the whole world (the training step's packed one) completes it: data-parallel replicas
(equal probes) add samples, tensor-parallel shards and pipeline stages add independent terms.
"""

from __future__ import annotations

import contextlib
from functools import partial
from typing import Iterator, Sequence

import torch
from megatron.core import parallel_state
from megatron.core.transformer.transformer_config import TransformerConfig

from megatron_acodm.errors import UserError
from megatron_acodm.model import layers_at_depths, mlp_output_projections, unwrap
from megatron_acodm.sketch import backend
from megatron_acodm.sketch.probes import rank_one_probes


def parse_sketch_layers(spec: str, num_layers: int) -> list[int]:
    """Global 0-based layer indices from "topN" (the last N layers, all if fewer) or relative depths "0.5,0.75,1.0".

    Depths map to layers as everywhere in the project (`megatron_acodm.model.layers_at_depths`:
    depth d picks layer ceil(d N) - 1, 1 the last; 0 the first); a layer picked twice is hooked once.
    """
    spec = spec.strip().lower()
    if spec.startswith("top"):
        count = int(spec[3:])
        if count < 1:
            raise UserError(f"sketch layers {spec!r}: N must be at least 1")
        # The default top3 on a shallower model (a small proxy) takes all of its layers.
        return list(range(max(0, num_layers - count), num_layers))
    depths = [float(item) for item in spec.split(",")]
    if not all(0.0 <= depth <= 1.0 for depth in depths):
        raise UserError(f"sketch layers {spec!r}: relative depths must lie in [0, 1]")
    return sorted(set(layers_at_depths(depths, num_layers)))


def _check_supported(config: TransformerConfig) -> None:
    if config.sequence_parallel:
        # linear_fc2's output (hence delta) is then split over the sequence while x is not.
        raise NotImplementedError("gradient sketches need sequence_parallel off")
    recomputed_mlp = config.recompute_granularity == "full" or (
        config.recompute_granularity == "selective" and "mlp" in (config.recompute_modules or [])
    )
    if recomputed_mlp:
        # The recomputed forward runs during backward, after later micro-batches set their domains.
        raise NotImplementedError("gradient sketches need linear_fc2 left out of activation recompute")


class _PendingInput:
    """One forward's layer input and token domains, held until its backward hook takes them."""

    __slots__ = ("x", "token_domain")

    def __init__(self, x: torch.Tensor, token_domain: torch.Tensor):
        self.x, self.token_domain = x, token_domain

    def take(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.x is None:
            raise RuntimeError("a second backward through one sketched forward (retain_graph) is not supported")
        taken = self.x, self.token_domain
        self.x = self.token_domain = None
        return taken


class GradientSketcher:
    """Sketches of the per-domain gradients of chosen layers' `mlp.linear_fc2` weights on this rank.

    `layers`: "topN" or relative depths (see `parse_sketch_layers`) over the whole model, or global
    0-based indices; only those living on this pipeline stage get hooks. `dim` (k): probes per
    layer shard. `num_segments` is the number of sketch rows: one per domain, or two per domain
    (`segments.half_segments`). Before each micro-batch's forward call `set_micro_batch_segments`;
    after the step's backward, `step_sketches()` gives this rank's `[num_segments, k]` fp32 sketch
    (the sum over its layers), to be summed over the world (the training step packs it into its
    one all-reduce).

    The probes are drawn once, at construction, and kept on the layer's device: k (m + n) values
    per hooked layer shard (5 MiB in bf16 for k = 256, hidden 2048, ffn 8192).
    """

    def __init__(
        self,
        model_chunks: torch.nn.Module | Sequence[torch.nn.Module],
        num_segments: int,
        *,
        layers: str | Sequence[int] = "top3",
        dim: int = 256,
        seed: int = 0,
    ):
        chunks = [model_chunks] if isinstance(model_chunks, torch.nn.Module) else list(model_chunks)
        config = unwrap(chunks[0]).config
        _check_supported(config)
        wanted = parse_sketch_layers(layers, config.num_layers) if isinstance(layers, str) else sorted(set(layers))
        if not all(0 <= index < config.num_layers for index in wanted):
            raise UserError(f"sketch layers {wanted}: the model has layers 0..{config.num_layers - 1}")
        tensor_parallel_rank = parallel_state.get_tensor_model_parallel_rank()

        self.num_segments = num_segments
        self.dim = dim
        self.local_layers: list[int] = []  # global indices of the layers hooked on this rank
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        for index, fc2 in sorted(mlp_output_projections(chunks).items()):
            if index not in wanted:
                continue
            weight = fc2.weight
            probes = rank_one_probes(seed, index, tensor_parallel_rank, tuple(weight.shape), dim, weight.device, weight.dtype)
            self._handles.append(fc2.register_forward_hook(partial(self._on_forward, probes)))
            self.local_layers.append(index)
        self._device = next(chunks[0].parameters()).device
        self._sketch = self._zeros()
        self._sequence_segments: torch.Tensor | None = None
        self._captured: list[torch.Tensor] | None = None
        # Off: the hooks do nothing, so a step whose mixer reads no sketch (`Mixer.signals_wanted`) costs nothing.
        self.active = True

    def _zeros(self) -> torch.Tensor:
        return torch.zeros(self.num_segments, self.dim, dtype=torch.float32, device=self._device)

    def set_micro_batch_segments(self, segment_ids: torch.Tensor) -> None:
        """The sketch row of each sequence `[b]` of the micro-batch whose forward comes next."""
        segment_ids = segment_ids.detach().to(device=self._device, dtype=torch.long).reshape(-1)
        if segment_ids.numel() and not 0 <= int(segment_ids.min()) <= int(segment_ids.max()) < self.num_segments:
            raise ValueError(f"segment ids must lie in [0, {self.num_segments})")
        self._sequence_segments = segment_ids

    def step_sketches(self) -> torch.Tensor:
        """This rank's `[num_segments, k]` fp32 sketch of the step so far (summed over its layers); resets it."""
        sketch, self._sketch = self._sketch, self._zeros()
        return sketch

    @contextlib.contextmanager
    def capturing_outputs(self) -> Iterator[list[torch.Tensor]]:
        """Within it, every sketched forward adds the hooked layers' output tensors to the list it
        yields: a gradient with respect to them alone (`torch.autograd.grad`) fills the sketch
        without reaching any parameter."""
        self._captured = []
        try:
            yield self._captured
        finally:
            self._captured = None

    def remove(self) -> None:
        """Remove every hook; the model runs as if no sketcher had been built."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _on_forward(self, probes: tuple[torch.Tensor, torch.Tensor], module, args: tuple, output) -> None:
        output_tensor = output[0] if isinstance(output, tuple) else output
        if not self.active or not output_tensor.requires_grad:
            return  # not sketched this step, or no backward will follow
        if self._sequence_segments is None:
            raise RuntimeError("GradientSketcher: call set_micro_batch_segments before each forward")
        x = args[0]  # [s, b, n]: megatron's activations are sequence-first
        if x.shape[1] != self._sequence_segments.numel():
            raise ValueError(
                f"micro-batch of {x.shape[1]} sequences, but {self._sequence_segments.numel()} segment ids were set"
            )
        # Flattened [s, b] is s-major: token (i, j) sits at i * b + j and belongs to sequence j.
        token_domain = self._sequence_segments.repeat(x.shape[0])
        pending = _PendingInput(x.detach(), token_domain)
        output_tensor.register_hook(partial(self._on_output_gradient, probes, pending))
        if self._captured is not None:
            self._captured.append(output_tensor)

    def _on_output_gradient(
        self, probes: tuple[torch.Tensor, torch.Tensor], pending: _PendingInput, delta: torch.Tensor
    ) -> None:
        x, token_domain = pending.take()
        u, v = probes
        self._sketch += backend.project_and_segment_sum(
            x.reshape(-1, x.shape[-1]), delta.reshape(-1, delta.shape[-1]), u, v, token_domain, self.num_segments
        )
