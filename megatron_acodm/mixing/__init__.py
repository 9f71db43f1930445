"""Mixers: what decides each step's domain weights, from what the previous steps showed."""

from megatron_acodm.mixing.base import DOMAIN_LOSSES, Mixer, StepSignals
from megatron_acodm.mixing.odm import ODMMixer
from megatron_acodm.mixing.registry import MIXERS, add_mixer_arguments, build_mixer
from megatron_acodm.mixing.static import StaticMixer, TemperatureMixer, UniformMixer

__all__ = [
    "DOMAIN_LOSSES",
    "MIXERS",
    "Mixer",
    "ODMMixer",
    "StaticMixer",
    "StepSignals",
    "TemperatureMixer",
    "UniformMixer",
    "add_mixer_arguments",
    "build_mixer",
]
