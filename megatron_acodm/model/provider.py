"""megatron.core's GPTModel from Megatron-LM-style argument values.

`args` is any object with these attributes (Megatron-LM's names; an argparse Namespace or a
SimpleNamespace):

- required: num_layers, hidden_size, ffn_hidden_size, num_attention_heads,
  max_position_embeddings, padded_vocab_size (see `pad_vocab_size`), tensor_model_parallel_size,
  pipeline_model_parallel_size (seq_length is the schedules' business, not the model's);
- optional, with their Megatron-LM defaults: num_query_groups (None: one group per head),
  position_embedding_type ("learned_absolute" | "rope"), normalization ("LayerNorm" | "RMSNorm"),
  norm_epsilon (1e-5), swiglu (False), untie_embeddings_and_output_weights (False),
  add_bias_linear (True), add_qkv_bias (False), qk_layernorm (False), kv_channels (None: hidden
  / heads), rotary_base (10000), rotary_percent (1.0), bf16 / fp16 (False), init_method_std
  (0.02), hidden_dropout / attention_dropout (0.1), virtual_pipeline_model_parallel_size (None),
  sequence_parallel (False), use_cpu_initialization (False; always True without CUDA),
  fp16_lm_cross_entropy (False).
"""

from __future__ import annotations

import math
from typing import Any

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

_OPTIONAL_DEFAULTS: dict[str, Any] = {
    "num_query_groups": None,
    "position_embedding_type": "learned_absolute",
    "normalization": "LayerNorm",
    "norm_epsilon": 1e-5,
    "swiglu": False,
    "untie_embeddings_and_output_weights": False,
    "add_bias_linear": True,
    "add_qkv_bias": False,
    "qk_layernorm": False,
    "kv_channels": None,
    "rotary_base": 10000,
    "rotary_percent": 1.0,
    "bf16": False,
    "fp16": False,
    "init_method_std": 0.02,
    "hidden_dropout": 0.1,
    "attention_dropout": 0.1,
    "virtual_pipeline_model_parallel_size": None,
    "sequence_parallel": False,
    "use_cpu_initialization": False,
    "fp16_lm_cross_entropy": False,
}


def _arg(args: Any, name: str) -> Any:
    return getattr(args, name, _OPTIONAL_DEFAULTS.get(name))


def pad_vocab_size(
    vocab_size: int, make_vocab_size_divisible_by: int = 128, tensor_model_parallel_size: int = 1
) -> int:
    """Megatron's padded vocabulary: the next multiple of `make_vocab_size_divisible_by * TP`.

    The padding depends on TP, so a checkpoint moves between TP sizes only when both pad alike.
    """
    multiple = make_vocab_size_divisible_by * tensor_model_parallel_size
    return int(math.ceil(vocab_size / multiple) * multiple)


def params_dtype_from_args(args: Any) -> torch.dtype:
    """bf16, fp16 or fp32, as `args.bf16` / `args.fp16` say (also what the OptimizerConfig needs)."""
    if _arg(args, "bf16"):
        return torch.bfloat16
    if _arg(args, "fp16"):
        return torch.float16
    return torch.float32


def transformer_config_from_args(args: Any) -> TransformerConfig:
    """The TransformerConfig (model shape, parallel layout, precision) that `args` describe."""
    params_dtype = params_dtype_from_args(args)
    swiglu = bool(_arg(args, "swiglu"))
    virtual_pipeline_size = _arg(args, "virtual_pipeline_model_parallel_size")
    return TransformerConfig(
        num_layers=args.num_layers,
        hidden_size=args.hidden_size,
        ffn_hidden_size=args.ffn_hidden_size,
        num_attention_heads=args.num_attention_heads,
        num_query_groups=_arg(args, "num_query_groups"),
        kv_channels=_arg(args, "kv_channels"),
        normalization=_arg(args, "normalization"),
        layernorm_epsilon=_arg(args, "norm_epsilon"),
        gated_linear_unit=swiglu,
        activation_func=F.silu if swiglu else F.gelu,
        add_bias_linear=_arg(args, "add_bias_linear"),
        add_qkv_bias=_arg(args, "add_qkv_bias"),
        qk_layernorm=_arg(args, "qk_layernorm"),
        init_method_std=_arg(args, "init_method_std"),
        hidden_dropout=_arg(args, "hidden_dropout"),
        attention_dropout=_arg(args, "attention_dropout"),
        bf16=bool(_arg(args, "bf16")),
        fp16=bool(_arg(args, "fp16")),
        params_dtype=params_dtype,
        pipeline_dtype=params_dtype,
        tensor_model_parallel_size=args.tensor_model_parallel_size,
        pipeline_model_parallel_size=args.pipeline_model_parallel_size,
        virtual_pipeline_model_parallel_size=virtual_pipeline_size,
        sequence_parallel=bool(_arg(args, "sequence_parallel")),
        # Without CUDA the weights can only be initialised on the CPU.
        use_cpu_initialization=_arg(args, "use_cpu_initialization") or not torch.cuda.is_available(),
        # Megatron-LM's choice: free a stage's activations once sent. The schedules then start
        # backward with custom_backward, which keeps compat's device mode active in backward.
        deallocate_pipeline_outputs=True,
        **pipeline_p2p_flags(virtual_pipeline_size),
    )


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


def transformer_layer_spec(args: Any) -> ModuleSpec:
    """Transformer Engine's layer spec where TE imports, megatron.core's local one otherwise."""
    qk_layernorm = _arg(args, "qk_layernorm")
    if _transformer_engine_available():
        # TE's spec takes the norm type from the config.
        return get_gpt_layer_with_transformer_engine_spec(qk_layernorm=qk_layernorm)
    return get_gpt_layer_local_spec(qk_layernorm=qk_layernorm, normalization=_arg(args, "normalization"))


def gpt_model_provider(
    config_args: Any, pre_process: bool = True, post_process: bool = True, vp_stage: int | None = None
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
        fp16_lm_cross_entropy=bool(_arg(config_args, "fp16_lm_cross_entropy")),
        parallel_output=True,
        share_embeddings_and_output_weights=not _arg(config_args, "untie_embeddings_and_output_weights"),
        position_embedding_type=_arg(config_args, "position_embedding_type"),
        rotary_percent=_arg(config_args, "rotary_percent"),
        rotary_base=_arg(config_args, "rotary_base"),
        vp_stage=vp_stage,
    )
