"""Weights & Biases logging with Megatron-LM's options: --wandb-project, --wandb-exp-name (the run's
name) and --wandb-save-dir (where wandb keeps its files; default <save>/wandb). The run gets the
arguments as its config and the TensorBoard scalars at their iterations, from the logging rank.

`wandb` is optional: a run that asks for it without the package is refused before it starts. Its
environment variables work as wandb documents them: WANDB_MODE=offline writes the run under
--wandb-save-dir without a network (`wandb sync` uploads it later), WANDB_ENTITY picks the team.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import Any, Optional

from megatron_acodm.errors import UserError
from megatron_acodm.output_paths import check_output_folder


@dataclass(frozen=True)
class WandbRun:
    """Where and under which names a run logs to W&B."""

    project: str
    name: str
    directory: str


def wandb_run(args: argparse.Namespace) -> Optional[WandbRun]:
    """The run's W&B settings, or None without --wandb-project."""
    if not args.wandb_project:
        return None
    return WandbRun(args.wandb_project, args.wandb_exp_name, args.wandb_save_dir)


def check_wandb(args: argparse.Namespace) -> None:
    """Before the process group: with --wandb-project, wandb imports and --wandb-save-dir can be written."""
    if not args.wandb_project:
        return
    try:
        import wandb  # noqa: F401
    except ImportError as error:
        raise UserError(
            f"--wandb-project {args.wandb_project}: the wandb package cannot be imported ({error}); "
            f"install it with `pip install wandb`, or drop --wandb-project"
        ) from None
    check_output_folder(args.wandb_save_dir, "--wandb-save-dir")


def open_wandb(settings: WandbRun) -> Any:
    """A started wandb run; its failure to start (no login, no network) as a UserError of this rank."""
    import wandb

    os.makedirs(settings.directory, exist_ok=True)
    try:
        return wandb.init(project=settings.project, name=settings.name, dir=settings.directory)
    except Exception as error:  # wandb raises its own types, by version
        raise UserError(
            f"--wandb-project {settings.project}: wandb could not start the run ({type(error).__name__}: {error}); "
            f"log in with `wandb login`, or set WANDB_MODE=offline to keep the run under --wandb-save-dir",
            rank_local=True,
        ) from None

