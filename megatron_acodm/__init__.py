"""megatron-acodm: Megatron-Core pretraining with a data mixture decided online."""

import warnings

__version__ = "0.1.0"

# megatron.core repeats this four times at import on every machine without Transformer Engine or
# apex (every CPU machine); which backends a run uses is logged once where it matters.
warnings.filterwarnings("ignore", message="Transformer Engine and Apex are not installed")
