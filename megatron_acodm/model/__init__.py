"""The GPT model provider: megatron.core's GPTModel from Megatron-LM-style arguments."""

from megatron_acodm.model.provider import (
    gpt_model_provider,
    pad_vocab_size,
    params_dtype_from_args,
    transformer_config_from_args,
)

__all__ = ["gpt_model_provider", "pad_vocab_size", "params_dtype_from_args", "transformer_config_from_args"]
