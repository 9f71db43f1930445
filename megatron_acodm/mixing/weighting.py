"""A weighting over the domains named on the command line: `--mixing-objective` and `--mixing-prior`.

    uniform          every domain alike
    tokens           proportional to each domain's corpus tokens (the manifest's counts)
    data-path        the --data-path weights (the blend a static run would use)
    NAME[,NAME...]   uniform over the named domains, zero elsewhere (an objective only: a prior
                     needs every domain, since the policy works with its logarithm)
    target           the target set of --target-data-path (an objective only: a row after the
                     domains', see `mixing.alignment.target_objective`)
    FILE.json        the weights of a blend file (a domains.json with a weight per domain, as
                     tools/mergemix.py writes), matched to the domains by name
"""

from __future__ import annotations

import argparse
import os
from typing import Optional, Sequence

import numpy

from megatron_acodm.data.manifest import load_manifest, validate_weights
from megatron_acodm.errors import UserError
from megatron_acodm.mixing.alignment import TARGET, target_objective

NAMED_WEIGHTINGS = ("uniform", "tokens", "data-path")


def domain_weighting(
    text: str,
    option: str,
    names: Sequence[str],
    data_path_weights: Sequence[float],
    domain_tokens: Optional[Sequence[float]],
    *,
    every_domain: bool,
) -> numpy.ndarray:
    """The weighting `text` names, float64 [K] summing to one; `every_domain` refuses zero entries."""
    if text == "uniform":
        weights = [1.0] * len(names)
    elif text == "tokens":
        if domain_tokens is None:
            raise UserError(f"{option} tokens needs each domain's token count; give a domains.json manifest as --data-path")
        weights = list(domain_tokens)
    elif text == "data-path":
        weights = list(data_path_weights)
    elif text.endswith(".json"):
        weights = _blend_file_weights(text, option, names)
    elif text == TARGET:  # reaches here only from a reader without a target row
        raise UserError(
            f"{option} target: only the alignment signal (--mixer acodm; --mixer dga always aligns with the "
            f"target) reads a target set; give one of {', '.join(NAMED_WEIGHTINGS)} or domain names"
        )
    else:
        chosen = [name.strip() for name in text.split(",") if name.strip()]
        unknown = [name for name in chosen if name not in names]
        if unknown or not chosen:
            problem = f"no domains {unknown} in --data-path" if unknown else "no domain named"
            raise UserError(
                f"{option} {text!r}: {problem}; give one of {', '.join(NAMED_WEIGHTINGS)}, a blend file (BLEND.json) "
                f"or domain names from {list(names)}"
            )
        weights = [1.0 if name in chosen else 0.0 for name in names]
    weights = numpy.array(validate_weights(weights, source=option))
    if every_domain and numpy.any(weights <= 0):
        missing = [name for name, weight in zip(names, weights) if weight <= 0]
        hint = " (tools/mergemix.py --min-weight keeps every weight positive)" if text.endswith(".json") else ""
        raise UserError(f"{option} {text!r} gives {missing} no weight; every domain needs a positive prior weight{hint}")
    return weights


def _blend_file_weights(path: str, option: str, names: Sequence[str]) -> list[float]:
    """The weights a blend file gives the domains `names`, in their order."""
    if not os.path.isfile(path):
        raise UserError(
            f"{option} {path}: no such blend file; write one with tools/mergemix.py --output {path}, or give one of "
            f"{', '.join(NAMED_WEIGHTINGS)}"
        )
    blend = load_manifest(path, option)
    given = {domain.name: domain.weight for domain in blend.domains}
    if sorted(given) != sorted(names):
        raise UserError(
            f"{option} {path}: the blend is over domains {sorted(given)}, --data-path has {sorted(names)}; "
            f"give a blend found for this corpus (tools/mergemix.py --data-path with the same domains)"
        )
    unweighted = [name for name, weight in given.items() if weight is None]
    if unweighted:
        raise UserError(f"{option} {path}: domains {unweighted} have no 'weight'; give every domain a weight")
    return [given[name] for name in names]


def objective_weighting(
    text: str, names: Sequence[str], data_path_weights: Sequence[float], domain_tokens: Optional[Sequence[float]], has_target: bool
) -> numpy.ndarray:
    """pi of `--mixing-objective` over the alignment signal's rows: [K], or [K + 1] for `target`."""
    if text != TARGET:
        return domain_weighting(text, "--mixing-objective", names, data_path_weights, domain_tokens, every_domain=False)
    if not has_target:
        raise UserError("--mixing-objective target needs --target-data-path: the target set whose loss the mixer lowers")
    return target_objective(len(names))


def mixing_prior(
    args: argparse.Namespace,
    names: Sequence[str],
    data_path_weights: Sequence[float],
    domain_tokens: Optional[Sequence[float]],
    published: str = "uniform",
) -> numpy.ndarray:
    """p0 of `--mixing-prior` for the mixers that start from (and may return to) a prior: every domain
    positive. `published`: the mixer's start in its paper, taken when `--mixing-prior` is not given."""
    text = args.mixing_prior if args.mixing_prior is not None else published
    return domain_weighting(text, "--mixing-prior", names, data_path_weights, domain_tokens, every_domain=True)
