"""`--mixer NAME`: the mixers a run can use, their command-line options, and building one by name."""

from __future__ import annotations

import argparse
import functools
from typing import Any, Optional, Sequence

from megatron_acodm.mixing.acodm import ACODMMixer
from megatron_acodm.mixing.ado import ADOMixer
from megatron_acodm.mixing.aioli import AioliMixer
from megatron_acodm.mixing.base import Mixer
from megatron_acodm.mixing.dga import DGAMixer
from megatron_acodm.mixing.mirror_step import DEFAULT_KL_RADIUS, DEFAULT_PRIOR_PULL
from megatron_acodm.mixing.importance import ImportanceMixer
from megatron_acodm.mixing.odm import ODMMixer
from megatron_acodm.mixing.schedule import ScheduleMixer
from megatron_acodm.mixing.static import StaticMixer, TemperatureMixer, UniformMixer

# A new mixer is one entry: its class brings its own options (`add_arguments`) and builder (`from_args`).
MIXERS: dict[str, type[Mixer]] = {
    "static": StaticMixer,
    "uniform": UniformMixer,
    "temperature": TemperatureMixer,
    "odm": ODMMixer,
    "acodm": ACODMMixer,
    "ado": ADOMixer,
    "aioli": AioliMixer,
    "dga": DGAMixer,
    "importance": ImportanceMixer,
    "schedule": ScheduleMixer,
}


def add_mixer_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add `--mixer` and every mixer's options; returns the parser, as Megatron's extra_args_provider does."""
    group = parser.add_argument_group(title="data mixing")
    group.add_argument(
        "--mixer",
        choices=list(MIXERS),
        default="static",
        help="how the domain weights of each step are decided; static keeps the --data-path weights",
    )
    group.add_argument(
        "--mixing-floor",
        type=float,
        default=0.0,
        help="every domain's weight is at least this: w <- (1 - K f) w + f over K domains; in [0, 1/K]",
    )
    # The signal and the bounds every gradient-based mixer shares (mixing/alignment.py, mixing/mirror_step.py).
    group.add_argument(
        "--mixing-objective",
        default="uniform",
        help="what the gradient-based mixers lower: the validation loss averaged over domains alike (uniform), "
        "by corpus tokens (tokens), by the --data-path weights (data-path), over the named domains "
        "(NAME[,NAME...]: the domains you evaluate on), or the target set of --target-data-path (target)",
    )
    group.add_argument(
        "--mixing-prior",
        default=None,
        help="the mixture the online mixers start from (and AC-ODM's bounded step is pulled back to): uniform, "
        "tokens, data-path, or a blend file (BLEND.json, e.g. from tools/mergemix.py); default: each mixer's "
        "published start, tokens for odm, ado and acodm, uniform for the others and for acodm's bounded action",
    )
    group.add_argument(
        "--mixing-prior-pull",
        type=float,
        default=DEFAULT_PRIOR_PULL,
        help="each step, this fraction of the log-weights returns to the prior's; in [0, 1]",
    )
    group.add_argument(
        "--mixing-kl-radius",
        type=float,
        default=DEFAULT_KL_RADIUS,
        help="the weights never leave KL(w || prior) <= this (under a uniform prior: at least K e^-radius effective domains)",
    )
    group.add_argument(
        "--mixing-score-ema",
        type=float,
        default=0.9,
        help="decay of the moving average of the per-domain alignment scores, in [0, 1)",
    )
    for mixer in MIXERS.values():
        mixer.add_arguments(group)
    return parser


# Options of the data-mixing group (and the sketch group) that several mixers read; each mixer
# declares those it reads in `Mixer.reads`.
SHARED_OPTIONS = (
    "mixing_objective", "mixing_prior", "mixing_prior_pull", "mixing_kl_radius", "mixing_score_ema",
    "sketch_layers", "sketch_dim",
)


@functools.lru_cache(maxsize=None)
def own_options(mixer: type[Mixer]) -> dict[str, Any]:
    """The options `mixer.add_arguments` adds, by name, with their defaults."""
    parser = argparse.ArgumentParser(add_help=False)
    mixer.add_arguments(parser.add_argument_group())
    return vars(parser.parse_args([]))


def unread_option(args: argparse.Namespace, defaults: dict[str, Any]) -> Optional[str]:
    """The first option given a value (other than its default) that `--mixer` does not read, as an
    error message; None when every option given is read. `defaults`: every option's default."""
    chosen = MIXERS[args.mixer]
    readable = set(own_options(chosen)) | chosen.reads
    for option in [*SHARED_OPTIONS, *(name for mixer in MIXERS.values() for name in own_options(mixer))]:
        if option in readable or getattr(args, option) == defaults[option]:
            continue
        readers = [name for name, mixer in MIXERS.items() if option in own_options(mixer) or option in mixer.reads]
        flag = "--" + option.replace("_", "-")
        return f"{flag} is read by --mixer {', '.join(readers)}{' only' if len(readers) == 1 else ''}, not by --mixer {args.mixer}; drop it"
    return None


def build_mixer(
    name: str,
    *,
    names: Sequence[str],
    initial_weights: Sequence[float],
    domain_tokens: Optional[Sequence[float]] = None,
    args: argparse.Namespace,
) -> Mixer:
    """The mixer `name` for these domains, with its options from `args`: the run's Namespace, as
    `arguments.parse_args` makes it (every option there, at its default where not given)."""
    if name not in MIXERS:
        raise ValueError(f"unknown mixer {name!r}; choose one of: {', '.join(MIXERS)}")
    return MIXERS[name].from_args(names=names, initial_weights=initial_weights, domain_tokens=domain_tokens, args=args)
