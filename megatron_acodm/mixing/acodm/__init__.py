"""AC-ODM (arXiv 2505.23878): a DDPG actor-critic deciding each step's domain weights.

`features` builds the state, `memory` holds absent domains' last signals, `networks` and `ddpg` are
the agent, `policy` the proxy-mode file, and `mixer` the `Mixer` that ties them together (its
reward and step come from the alignment signal every gradient mixer shares, `mixing/alignment.py`).
"""

from megatron_acodm.mixing.acodm.features import DEFAULT_LAYER_DEPTHS, FeatureSpec
from megatron_acodm.model.layers import layers_at_depths
from megatron_acodm.mixing.acodm.mixer import ACODMMixer
from megatron_acodm.mixing.acodm.policy import PolicyError

__all__ = ["ACODMMixer", "DEFAULT_LAYER_DEPTHS", "FeatureSpec", "PolicyError", "layers_at_depths"]
