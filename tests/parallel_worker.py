"""Trains a tiny GPT for a few steps with megatron.core at given parallel layouts; writes the numbers.

Launched by tests/test_parallel_gpt.py, as a single process (`python parallel_worker.py ...`) or
under `torchrun --nproc-per-node 2`. Each run in `--runs` (see `Layout`) builds its model chunks
with `gpt_model_provider`, loads the initial weights of its model family from a dist_checkpointing
checkpoint saved by the single process (`--save-checkpoints`), and then:

- evaluates the logits and the loss of a fixed global batch (logits gathered over tensor-parallel
  ranks);
- takes STEPS optimizer steps with megatron.core's DDP, `get_megatron_optimizer` (Adam, grad
  clipping), `OptimizerParamScheduler` and `get_forward_backward_func`;
- evaluates the loss of the fixed batch again after the last step.

Rank 0 writes `{run: {"losses", "grad_norms", "initial_eval_loss", "final_loss", "param_dtype"}}`
to `--out` (the eval losses are those of the fixed batch before and after training); the
last stage writes the logits to `<out>.<run>.logits.pt`. The forward step and the masked mean LM
loss live here, not in the library: the trainer brings its own (per-domain) loss function.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from functools import partial
from types import SimpleNamespace
from typing import Callable, Iterator

import torch
import torch.distributed as dist
from megatron.core import dist_checkpointing, parallel_state
from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig, finalize_model_grads
from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler
from megatron.core.pipeline_parallel import get_forward_backward_func
from megatron.core.tensor_parallel import gather_from_tensor_model_parallel_region, model_parallel_cuda_manual_seed
from megatron.core.transformer.module import Float16Module

from megatron_acodm.compat import activate_cpu_compat, init_distributed
from megatron_acodm.model import gpt_model_provider, pad_vocab_size

SEED = 1234
VOCAB = 512
SEQ = 32
MICRO_BATCH = 2
GLOBAL_BATCH = 8
STEPS = 3

# Shared by both model families; Megatron-LM attribute names, as the trainer's Namespace has them.
COMMON_ARGS = dict(
    num_layers=4,
    hidden_size=64,
    ffn_hidden_size=128,
    num_attention_heads=4,
    seq_length=SEQ,
    max_position_embeddings=SEQ,
    init_method_std=0.02,
    hidden_dropout=0.0,
    attention_dropout=0.0,
)
MODELS = {
    "llama": dict(
        position_embedding_type="rope",
        normalization="RMSNorm",
        swiglu=True,
        num_query_groups=2,
        add_bias_linear=False,
        untie_embeddings_and_output_weights=True,
    ),
    "gpt": dict(
        position_embedding_type="learned_absolute",
        normalization="LayerNorm",
        swiglu=False,
        num_query_groups=None,
        add_bias_linear=True,
        untie_embeddings_and_output_weights=False,
    ),
}


@dataclass
class Layout:
    """A run spec such as `tp=2`, `pp=2,vp=2`, `dp=2,distopt`, `model=gpt,pp=2` or `bf16`."""

    name: str
    model: str = "llama"
    tp: int = 1
    pp: int = 1
    vp: int | None = None
    dp: int = 1
    distributed_optimizer: bool = False
    bf16: bool = False

    @classmethod
    def parse(cls, spec: str) -> "Layout":
        layout = cls(name=spec)
        for item in filter(None, spec.split(",")):
            key, _, value = item.partition("=")
            if key in ("tp", "pp", "vp", "dp"):
                setattr(layout, key, int(value))
            elif key == "model":
                layout.model = value
            elif key == "distopt":
                layout.distributed_optimizer = True
            elif key == "bf16":
                layout.bf16 = True
            else:
                raise ValueError(f"unknown layout item {item!r} in {spec!r}")
        return layout


@dataclass
class MicroBatch:
    tokens: torch.Tensor
    labels: torch.Tensor
    loss_mask: torch.Tensor
    position_ids: torch.Tensor


def global_batches(count: int) -> list[list[torch.Tensor]]:
    """`count` global batches of GLOBAL_BATCH token sequences (SEQ + 1 tokens), the same on every rank."""
    generator = torch.Generator().manual_seed(SEED)
    return [
        list(torch.randint(0, VOCAB, (GLOBAL_BATCH, SEQ + 1), generator=generator))
        for _ in range(count)
    ]


def micro_batches(sequences: list[torch.Tensor], dp_rank: int, dp_size: int) -> list[MicroBatch]:
    """This data-parallel rank's contiguous share of a global batch, cut into micro-batches."""
    per_rank = len(sequences) // dp_size
    mine = torch.stack(sequences[dp_rank * per_rank : (dp_rank + 1) * per_rank])
    batches = []
    for chunk in mine.split(MICRO_BATCH):
        tokens, labels = chunk[:, :-1].contiguous(), chunk[:, 1:].contiguous()
        # Leave labels divisible by 7 out of the loss, so that the mean really is a masked one.
        loss_mask = (labels % 7 != 0).float()
        position_ids = torch.arange(SEQ).expand_as(tokens)
        batches.append(MicroBatch(tokens, labels, loss_mask, position_ids))
    return batches


def masked_lm_loss(
    loss_mask: torch.Tensor, token_losses: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Megatron's 3-tuple loss: (loss sum, token count, reported [sum, count])."""
    mask = loss_mask.reshape(-1)
    loss_sum = torch.sum(token_losses.float().reshape(-1) * mask)
    num_tokens = mask.sum().to(torch.int)
    # The schedule divides `loss_sum` in place: report a copy.
    reported = torch.stack([loss_sum.detach().clone(), mask.sum()])
    return loss_sum, num_tokens, {"lm loss": reported}


def forward_step(data_iterator: Iterator[MicroBatch], model: torch.nn.Module) -> tuple[torch.Tensor, Callable]:
    batch = next(data_iterator)
    # No attention mask: the layer spec's attention is causal by itself.
    token_losses = model(batch.tokens, batch.position_ids, None, labels=batch.labels)
    return token_losses, partial(masked_lm_loss, batch.loss_mask)


def gathered_logits(logits: torch.Tensor, non_loss_data: bool = True) -> torch.Tensor:
    """The full-vocabulary logits of a micro-batch (the model's output is vocab-parallel)."""
    return gather_from_tensor_model_parallel_region(logits).detach().clone()


def logits_step(data_iterator: Iterator[MicroBatch], model: torch.nn.Module) -> tuple[torch.Tensor, Callable]:
    batch = next(data_iterator)
    return model(batch.tokens, batch.position_ids, None), gathered_logits


def build_model_chunks(layout: Layout) -> list[torch.nn.Module]:
    """Initialise megatron's parallel state for `layout` and build this rank's model chunks."""
    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=layout.tp,
        pipeline_model_parallel_size=layout.pp,
        virtual_pipeline_model_parallel_size=layout.vp,
    )
    model_parallel_cuda_manual_seed(SEED)
    args = SimpleNamespace(
        **COMMON_ARGS,
        **MODELS[layout.model],
        padded_vocab_size=pad_vocab_size(VOCAB, 128, layout.tp),
        tensor_model_parallel_size=layout.tp,
        pipeline_model_parallel_size=layout.pp,
        virtual_pipeline_model_parallel_size=layout.vp,
        bf16=layout.bf16,
    )
    return [
        gpt_model_provider(
            args,
            pre_process=parallel_state.is_pipeline_first_stage(ignore_virtual=False, vp_stage=stage),
            post_process=parallel_state.is_pipeline_last_stage(ignore_virtual=False, vp_stage=stage),
            vp_stage=stage,
        )
        for stage in (range(layout.vp) if layout.vp else [None])
    ]


class Run:
    """One layout: parallel state, model chunks, DDP, optimizer, scheduler."""

    def __init__(self, layout: Layout, checkpoint: str):
        self.layout = layout
        self.chunks = build_model_chunks(layout)
        self.load(checkpoint)
        if layout.bf16:
            # As Megatron-LM's get_model does: every parameter in bf16, fp32 outputs at the last stage.
            self.chunks = [Float16Module(chunk.config, chunk) for chunk in self.chunks]
        self.models: list[torch.nn.Module] = self.chunks
        self.dp_rank = parallel_state.get_data_parallel_rank()
        self.dp_size = parallel_state.get_data_parallel_world_size()
        assert self.dp_size == layout.dp, f"{layout.name}: the world leaves data-parallel size {self.dp_size}"
        self.is_loss_reporter = (
            parallel_state.is_pipeline_last_stage() and parallel_state.get_tensor_model_parallel_rank() == 0
        )

    def load(self, checkpoint: str) -> None:
        # One load for all virtual stages: each sees only its own layers of the stacked tensors.
        sharded = {f"model{index}": chunk.sharded_state_dict() for index, chunk in enumerate(self.chunks)}
        state = dist_checkpointing.load(sharded, checkpoint)
        for index, chunk in enumerate(self.chunks):
            chunk.load_state_dict(state[f"model{index}"])

    def forward_backward(
        self, batches: list[MicroBatch], step_func: Callable, forward_only: bool, collect: bool = False
    ) -> list:
        # Every virtual stage walks the same micro-batches in order.
        return get_forward_backward_func()(
            forward_step_func=step_func,
            data_iterator=[iter(batches) for _ in self.chunks],
            model=self.models,
            num_microbatches=len(batches),
            seq_length=SEQ,
            micro_batch_size=MICRO_BATCH,
            forward_only=forward_only,
            collect_non_loss_data=collect,
        )

    def logits(self, sequences: list[torch.Tensor]) -> torch.Tensor | None:
        """Full logits of a whole global batch (every rank runs all of it) at the last stage, else None."""
        batches = micro_batches(sequences, dp_rank=0, dp_size=1)
        outputs = self.forward_backward(batches, logits_step, forward_only=True, collect=True)
        return torch.cat(outputs) if outputs else None

    def wrap_for_training(self) -> None:
        ddp_config = DistributedDataParallelConfig(
            grad_reduce_in_fp32=True,
            overlap_grad_reduce=True,
            use_distributed_optimizer=self.layout.distributed_optimizer,
            bucket_size=4096,
        )
        config = self.chunks[0].config
        self.models = [
            DistributedDataParallel(config, ddp_config, chunk, disable_bucketing=index > 0)
            for index, chunk in enumerate(self.chunks)
        ]
        config.no_sync_func = [model.no_sync for model in self.models]
        config.finalize_model_grads_func = finalize_model_grads
        if len(self.models) == 1:
            config.no_sync_func = config.no_sync_func[0]
        optimizer_config = OptimizerConfig(
            optimizer="adam",
            lr=1e-3,
            min_lr=1e-4,
            weight_decay=0.01,
            clip_grad=0.5,
            bf16=self.layout.bf16,
            params_dtype=config.params_dtype,
            use_distributed_optimizer=self.layout.distributed_optimizer,
        )
        self.optimizer = get_megatron_optimizer(optimizer_config, self.models)
        self.scheduler = OptimizerParamScheduler(
            self.optimizer,
            init_lr=1e-4,
            max_lr=1e-3,
            min_lr=1e-4,
            lr_warmup_steps=1,
            lr_decay_steps=STEPS,
            lr_decay_style="cosine",
            start_wd=0.01,
            end_wd=0.01,
            wd_incr_steps=STEPS,
            wd_incr_style="constant",
        )

    def reported_loss(self, outputs: list[dict]) -> float:
        """Token-mean loss over the global batch (micro-batches and data-parallel ranks)."""
        total = torch.zeros(2, dtype=torch.float64)
        if self.is_loss_reporter:
            total += sum(output["lm loss"].double() for output in outputs)
        dist.all_reduce(total)
        return (total[0] / total[1]).item()

    def train_step(self, sequences: list[torch.Tensor]) -> tuple[float, float]:
        for model in self.models:
            model.zero_grad_buffer()
        self.optimizer.zero_grad()
        batches = micro_batches(sequences, self.dp_rank, self.dp_size)
        outputs = self.forward_backward(batches, forward_step, forward_only=False)
        succeeded, grad_norm, _ = self.optimizer.step()
        assert succeeded
        self.scheduler.step(increment=1)
        return self.reported_loss(outputs), float(grad_norm)

    def eval_loss(self, sequences: list[torch.Tensor]) -> float:
        batches = micro_batches(sequences, self.dp_rank, self.dp_size)
        outputs = self.forward_backward(batches, forward_step, forward_only=True)
        return self.reported_loss(outputs)


def run_layout(layout: Layout, checkpoints: str, out: str) -> dict:
    run = Run(layout, os.path.join(checkpoints, layout.model))
    batches = global_batches(STEPS + 1)
    logits = run.logits(batches[-1])
    if logits is not None and parallel_state.get_tensor_model_parallel_rank() == 0 and run.dp_rank == 0:
        torch.save(logits.float(), f"{out}.{layout.name}.logits.pt")
    initial_loss = run.eval_loss(batches[-1])
    run.wrap_for_training()
    losses, grad_norms = zip(*(run.train_step(batch) for batch in batches[:STEPS]))
    result = {
        "losses": list(losses),
        "grad_norms": list(grad_norms),
        "initial_eval_loss": initial_loss,
        "final_loss": run.eval_loss(batches[-1]),
        "param_dtype": str(next(run.chunks[0].parameters()).dtype),
    }
    parallel_state.destroy_model_parallel()
    return result


def save_initial_checkpoints(checkpoints: str) -> None:
    """The initial weights of each model family, built in one process, for every layout to start from."""
    for model_name in MODELS:
        (model,) = build_model_chunks(Layout(name=model_name, model=model_name))
        folder = os.path.join(checkpoints, model_name)
        os.makedirs(folder)
        dist_checkpointing.save({"model0": model.sharded_state_dict()}, folder)
        parallel_state.destroy_model_parallel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoints", required=True, help="folder of one initial checkpoint per model family")
    parser.add_argument("--save-checkpoints", action="store_true", help="write them first (single process)")
    parser.add_argument("--runs", nargs="+", default=[])
    parser.add_argument("--out", required=True)
    options = parser.parse_args()

    activate_cpu_compat()
    rank, _ = init_distributed()
    if options.save_checkpoints:
        save_initial_checkpoints(options.checkpoints)
    results = {spec: run_layout(Layout.parse(spec), options.checkpoints, options.out) for spec in options.runs}
    if rank == 0:
        with open(options.out, "w") as stream:
            json.dump(results, stream, indent=1)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":  # dist_checkpointing's saver spawns a process that re-imports this file
    main()
