"""Build a run's megatron.core parts from the arguments: process groups, model, optimizer, LR schedule.

This is megatron.core used as on GPUs; on a CPU machine `compat.activate_cpu_compat()` (called by
`initialize`) makes the same calls work on gloo.
"""

from __future__ import annotations

import random
from argparse import Namespace

import numpy
import torch

from megatron.core import parallel_state, tensor_parallel
from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig, finalize_model_grads
from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler
from megatron.core.transformer.module import Float16Module

from megatron_acodm import compat
from megatron_acodm.model import gpt_model_provider, params_dtype_from_args


def initialize(args: Namespace) -> None:
    """Process groups (NCCL on GPUs, gloo on CPU), model-parallel groups and every seed."""
    compat.activate_cpu_compat()
    compat.init_distributed()
    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=args.tensor_model_parallel_size,
        pipeline_model_parallel_size=args.pipeline_model_parallel_size,
        virtual_pipeline_model_parallel_size=args.virtual_pipeline_model_parallel_size,
    )
    seed_everything(args.seed)


def seed_everything(seed: int) -> None:
    # Megatron offsets the seed per pipeline stage so stages do not draw the same dropout masks.
    stage_seed = seed + 100 * parallel_state.get_pipeline_model_parallel_rank()
    random.seed(stage_seed)
    numpy.random.seed(stage_seed)
    torch.manual_seed(stage_seed)
    tensor_parallel.model_parallel_cuda_manual_seed(stage_seed)


def device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def build_model(args: Namespace) -> list[DistributedDataParallel]:
    """This rank's GPTModel stage wrapped in megatron.core's DDP: one chunk, or, as Megatron-LM's
    get_model builds them, one per virtual stage (`virtual_pipeline_model_parallel_size`, which the
    command line does not offer: the trainer's step and checkpoints take one chunk; tests set it)."""
    stages = range(args.virtual_pipeline_model_parallel_size) if args.virtual_pipeline_model_parallel_size else [None]
    ddp_config = DistributedDataParallelConfig(
        grad_reduce_in_fp32=True,
        overlap_grad_reduce=False,
        use_distributed_optimizer=args.use_distributed_optimizer,
    )
    chunks = []
    for index, stage in enumerate(stages):
        model = gpt_model_provider(
            args,
            pre_process=parallel_state.is_pipeline_first_stage(ignore_virtual=False, vp_stage=stage),
            post_process=parallel_state.is_pipeline_last_stage(ignore_virtual=False, vp_stage=stage),
            vp_stage=stage,
        ).to(device())
        if args.bf16 or args.fp16:
            # As Megatron-LM: casts inputs and norms to half precision, returns fp32 at the last stage.
            model = Float16Module(model.config, model)
        # As Megatron-LM: only the first chunk's gradients are bucketed.
        chunks.append(DistributedDataParallel(model.config, ddp_config, model, disable_bucketing=index > 0))
    return chunks


def build_optimizer(args: Namespace, model: list[DistributedDataParallel]):
    """megatron.core's Adam (distributed when asked) and its LR/weight-decay schedule."""
    optimizer = get_megatron_optimizer(
        OptimizerConfig(
            optimizer="adam",
            lr=args.lr,
            min_lr=args.min_lr,
            weight_decay=args.weight_decay,
            adam_beta1=args.adam_beta1,
            adam_beta2=args.adam_beta2,
            adam_eps=args.adam_eps,
            clip_grad=args.clip_grad,
            bf16=args.bf16,
            fp16=args.fp16,
            params_dtype=params_dtype_from_args(args),
            use_distributed_optimizer=args.use_distributed_optimizer,
        ),
        model,
    )
    scheduler = build_scheduler(args, optimizer)
    # What Megatron's schedules expect to find on the model config.
    config = model[0].config
    config.grad_scale_func = optimizer.scale_loss
    config.finalize_model_grads_func = finalize_model_grads
    config.no_sync_func = model[0].no_sync if len(model) == 1 else [chunk.no_sync for chunk in model]
    return optimizer, scheduler


def build_scheduler(args: Namespace, optimizer) -> OptimizerParamScheduler:
    """megatron.core's LR and weight-decay schedule over `optimizer`, as Megatron-LM builds it."""
    return OptimizerParamScheduler(
        optimizer,
        init_lr=0.0 if args.lr_warmup_iters > 0 else args.lr,
        max_lr=args.lr,
        min_lr=args.min_lr,
        lr_warmup_steps=args.lr_warmup_iters,
        lr_decay_steps=args.lr_decay_iters,
        lr_decay_style=args.lr_decay_style,
        start_wd=args.weight_decay,
        end_wd=args.weight_decay,
        wd_incr_steps=args.train_iters,
        wd_incr_style="constant",
        # As Megatron-LM: on resume the checkpoint's schedule is kept unless the arguments override
        # it; a silent difference is refused before (training.resume.check_resumable).
        use_checkpoint_opt_param_scheduler=not args.override_opt_param_scheduler,
        override_opt_param_scheduler=args.override_opt_param_scheduler,
    )
