"""The GPT model provider (megatron.core's GPTModel from Megatron-LM-style arguments) and layer lookup."""

from megatron_acodm.model.layers import layers_at_depths, mlp_output_projections, unwrap
from megatron_acodm.model.provider import (
    gpt_model_provider,
    norm_supports_sequence_parallel,
    pad_vocab_size,
    params_dtype_from_args,
    transformer_config_from_args,
)

__all__ = [
    "gpt_model_provider",
    "layers_at_depths",
    "mlp_output_projections",
    "norm_supports_sequence_parallel",
    "pad_vocab_size",
    "params_dtype_from_args",
    "transformer_config_from_args",
    "unwrap",
]
