"""megatron-acodm: Megatron-Core pretraining with a data mixture decided online."""

import warnings

__version__ = "0.1.0"

# megatron.core repeats these at import and model build on every machine without Transformer
# Engine or apex (every CPU machine); they say nothing a CPU user can act on.
warnings.filterwarnings("ignore", message="Transformer Engine and Apex are not installed")
warnings.filterwarnings("ignore", message="Apex is not installed")
# megatron.core 0.16.1's own TransformerConfig default trips its deprecation of CUDA-graph scopes.
warnings.filterwarnings("ignore", message="full scope is deprecated")
