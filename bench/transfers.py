"""Mixtures learned on a small proxy model, carried to the target: the proxies, and what each transfer gives the target.

A proxy run trains a mixer on the proxy model (`--proxy-layers`, `--proxy-hidden`) for the target's
steps. What it leaves beside its metrics:
- `schedule.json`: the mixture it followed (its logged weights), coarsened to `REPLAY_PHASES`
  phases of equal length, each the mean over its steps (`tools/export_schedule.py --phases 10`);
- `mean_blend.json`: its mean mixture over the run, a static blend of its corpus (`--phases 1`,
  the DoReMi-style transfer);
- the AC-ODM proxy also its actor, `policy.pt` (`--acodm-export-policy`).

The target's mixers that read them (`TRANSFERS`): the frozen policy driving the target
(`acodm_proxy`, AC-ODM only: ADO has no policy to freeze, its online run on the target is `ado`),
the replayed schedule (`*_proxy_replay`, `--mixer schedule`) and the mean blend (`*_proxy_mean`,
`--mixer static` on the blend). All three cost the proxy's run once per seed. Used by `runs.py`
(the command lines and the exports), `mixing_quality.py` (which proxies to run) and its analysis
(the cost and the comparison within a family).
"""

from __future__ import annotations

import json
import os
from typing import NamedTuple

from megatron_acodm.atomic_files import write_text_atomically
from megatron_acodm.mixing.schedule_export import blend_manifest, schedule_document

REPLAY_PHASES = 10
# proxy run label -> the mixer it trains on the proxy model
PROXIES = {"proxy": "acodm", "proxy_ado": "ado"}
SCHEDULE, BLEND, POLICY = "schedule.json", "mean_blend.json", "policy.pt"


class Transfer(NamedTuple):
    proxy: str  # the proxy run's label
    kind: str  # policy, replay or mean


TRANSFERS = {
    "acodm_proxy": Transfer("proxy", "policy"),
    "acodm_proxy_replay": Transfer("proxy", "replay"),
    "acodm_proxy_mean": Transfer("proxy", "mean"),
    "ado_proxy_replay": Transfer("proxy_ado", "replay"),
    "ado_proxy_mean": Transfer("proxy_ado", "mean"),
}
# What each family's transfers are compared with, paired by seed: the learned policy on the target
# (AC-ODM's frozen actor; for ADO, ADO itself run online on the target).
FAMILY_REFERENCE = {"proxy": "acodm_proxy", "proxy_ado": "ado"}


def proxy_exports(folder: str) -> list[str]:
    """The mixtures a proxy run followed, as its transfers read them (small: its archive keeps them)."""
    return [os.path.join(folder, name) for name in (SCHEDULE, BLEND)]


def proxy_products(proxy: str, folder: str) -> list[str]:
    """The files a proxy run leaves for its transfers: its exports and, for AC-ODM, its actor."""
    return proxy_exports(folder) + ([os.path.join(folder, POLICY)] if PROXIES[proxy] == "acodm" else [])


def write_exports(metrics_path: str, folder: str) -> None:
    """The proxy run's followed mixture as a replayable schedule and as a mean blend, beside its metrics."""
    document = schedule_document(metrics_path, "weights", REPLAY_PHASES)
    write_text_atomically(os.path.join(folder, SCHEDULE), json.dumps(document, indent=2) + "\n")
    blend = os.path.join(folder, BLEND)
    blend_manifest(metrics_path, blend, "weights").save(blend)


def transfers_of(proxy: str, mixers: list[str]) -> list[str]:
    """The mixers among `mixers` that read the proxy run `proxy`, in their order."""
    return [mixer for mixer in mixers if mixer in TRANSFERS and TRANSFERS[mixer].proxy == proxy]


def transfer_arguments(mixer: str, proxy_folder: str) -> list[str]:
    """The mixer options of a target run that reads its proxy (the mean blend: `transfer_corpus` too)."""
    kind = TRANSFERS[mixer].kind
    if kind == "policy":
        return ["--mixer", "acodm", "--acodm-policy", os.path.join(proxy_folder, POLICY)]
    if kind == "replay":
        return ["--mixer", "schedule", "--mixing-schedule", os.path.join(proxy_folder, SCHEDULE)]
    return ["--mixer", "static"]


def transfer_corpus(mixer: str, proxy_folder: str) -> str | None:
    """The --data-path that replaces the corpus for a transfer of the proxy's mean blend; None for the others."""
    return os.path.join(proxy_folder, BLEND) if TRANSFERS[mixer].kind == "mean" else None
