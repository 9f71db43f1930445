"""Mixers: what decides each step's domain weights, from what the previous steps showed."""

from megatron_acodm.mixing.acodm import ACODMMixer, layers_at_depths
from megatron_acodm.mixing.ado import ADOMixer
from megatron_acodm.mixing.aioli import AioliMixer
from megatron_acodm.mixing.base import DOMAIN_LOSSES, GRADIENT_GRAM, LAYER_DRIFTS, LAYER_NORMS, TARGET_GRADIENT, Mixer, StepSignals
from megatron_acodm.mixing.odm import ODMMixer
from megatron_acodm.mixing.registry import MIXERS, add_mixer_arguments, build_mixer
from megatron_acodm.mixing.static import StaticMixer, TemperatureMixer, UniformMixer

__all__ = [
    "ACODMMixer",
    "ADOMixer",
    "AioliMixer",
    "DOMAIN_LOSSES",
    "GRADIENT_GRAM",
    "LAYER_DRIFTS",
    "LAYER_NORMS",
    "MIXERS",
    "Mixer",
    "ODMMixer",
    "StaticMixer",
    "StepSignals",
    "TARGET_GRADIENT",
    "TemperatureMixer",
    "UniformMixer",
    "add_mixer_arguments",
    "build_mixer",
    "layers_at_depths",
]
