"""megatron.core's GPTModel from the run's parsed arguments.

`args` is the Namespace `megatron_acodm.arguments.parse_args` makes, with `padded_vocab_size` set
(see `pad_vocab_size`): the parser is the one place every setting and its default is defined, so
nothing here fills a missing one. Code that builds a model without a command line (tests,
benchmarks) gets a complete Namespace the same way, `parse_args([...])`, and may then change the
settings the command line does not offer (`virtual_pipeline_model_parallel_size`,
`add_bias_linear`, ...) on it.

As Megatron-LM's `core_transformer_config_from_args`, the TransformerConfig takes every argument
named like one of its fields, then the few whose names or meanings differ.
"""

from __future__ import annotations

import dataclasses
import math
from argparse import Namespace

import torch
import torch.nn.functional as F
from megatron.core.models.gpt import GPTModel
from megatron.core.models.gpt.gpt_layer_specs import (
    get_gpt_layer_local_spec,
    get_gpt_layer_with_transformer_engine_spec,
)
from megatron.core.transformer.spec_utils import ModuleSpec
from megatron.core.transformer.transformer_config import TransformerConfig

from megatron_acodm.compat import pipeline_p2p_flags


def pad_vocab_size(
    vocab_size: int, make_vocab_size_divisible_by: int = 128, tensor_model_parallel_size: int = 1
) -> int:
    """Megatron's padded vocabulary: the next multiple of `make_vocab_size_divisible_by * TP`.

    The padding depends on TP, so a checkpoint moves between TP sizes only when both pad alike.
    """
    multiple = make_vocab_size_divisible_by * tensor_model_parallel_size
    return int(math.ceil(vocab_size / multiple) * multiple)


def params_dtype_from_args(args: Namespace) -> torch.dtype:
    """bf16, fp16 or fp32, as `args.bf16` / `args.fp16` say (also what the OptimizerConfig needs)."""
    if args.bf16:
        return torch.bfloat16
    if args.fp16:
        return torch.float16
    return torch.float32


def transformer_config_from_args(args: Namespace) -> TransformerConfig:
    """The TransformerConfig (model shape, parallel layout, precision) that `args` describe."""
    settings = {field.name: getattr(args, field.name) for field in dataclasses.fields(TransformerConfig) if hasattr(args, field.name)}
    params_dtype = params_dtype_from_args(args)
    settings.update(
        layernorm_epsilon=args.norm_epsilon,
        gated_linear_unit=args.swiglu,
        activation_func=F.silu if args.swiglu else F.gelu,
        params_dtype=params_dtype,
        pipeline_dtype=params_dtype,
        # Without CUDA the weights can only be initialised on the CPU.
        use_cpu_initialization=args.use_cpu_initialization or not torch.cuda.is_available(),
        # Megatron-LM's choice: free a stage's activations once sent. The schedules then start
        # backward with custom_backward, which keeps compat's device mode active in backward.
        deallocate_pipeline_outputs=True,
        **pipeline_p2p_flags(args.virtual_pipeline_model_parallel_size),
    )
    return TransformerConfig(**settings)


def _transformer_engine_available() -> bool:
    try:
        import transformer_engine  # noqa: F401
    except ImportError:
        return False
    return True


def norm_supports_sequence_parallel() -> bool:
    """Sequence parallelism needs TE's or apex's LayerNorm: megatron.core's torch fallback refuses it."""
    from megatron.core.models.gpt.gpt_layer_specs import HAVE_APEX

    return HAVE_APEX or _transformer_engine_available()


def transformer_layer_spec(args: Namespace) -> ModuleSpec:
    """Transformer Engine's layer spec where TE imports, megatron.core's local one otherwise."""
    if _transformer_engine_available():
        # TE's spec takes the norm type from the config.
        return get_gpt_layer_with_transformer_engine_spec(qk_layernorm=args.qk_layernorm)
    return get_gpt_layer_local_spec(qk_layernorm=args.qk_layernorm, normalization=args.normalization)


def gpt_model_provider(
    config_args: Namespace, pre_process: bool = True, post_process: bool = True, vp_stage: int | None = None
) -> GPTModel:
    """One pipeline stage (or virtual stage `vp_stage`) of the GPT that `config_args` describe.

    Call after `parallel_state.initialize_model_parallel` (and, on CPU, `activate_cpu_compat()`).
    With bf16/fp16, wrap the result in megatron.core's `Float16Module` as Megatron-LM's `get_model`
    does: it casts the norms (built in fp32) and the inputs, and returns fp32 at the last stage.
    """
    return GPTModel(
        config=transformer_config_from_args(config_args),
        transformer_layer_spec=transformer_layer_spec(config_args),
        vocab_size=config_args.padded_vocab_size,
        max_sequence_length=config_args.max_position_embeddings,
        pre_process=pre_process,
        post_process=post_process,
        fp16_lm_cross_entropy=config_args.fp16_lm_cross_entropy,
        parallel_output=True,
        share_embeddings_and_output_weights=not config_args.untie_embeddings_and_output_weights,
        position_embedding_type=config_args.position_embedding_type,
        rotary_percent=config_args.rotary_percent,
        rotary_base=config_args.rotary_base,
        vp_stage=vp_stage,
    )
