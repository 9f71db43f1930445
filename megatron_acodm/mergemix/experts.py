"""Domain experts: from one base checkpoint, a short `pretrain_acodm.py` run per domain on that domain alone.

An expert is Megatron-LM's finetuning start (`--pretrained-checkpoint`: the base's weights, a new
optimizer) trained `--expert-iters` steps at a constant learning rate, with the base run's model,
batch, optimizer and tokenizer settings; so tensor, pipeline and data parallelism, checkpoints and
resuming are the trainer's own. Its folder holds `expert.json`, what it was trained from and on:
an expert whose record matches is reused when complete and resumed when not, and one made from
another base, on other data or with other settings is refused, never silently retrained.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from typing import Optional

from megatron_acodm.arguments import argument_names, command_line
from megatron_acodm.atomic_files import write_text_atomically
from megatron_acodm.data.manifest import Domain, Manifest
from megatron_acodm.errors import UserError
from megatron_acodm.training.checkpoint import COMMON_STATE, checkpoint_path, open_checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAINER = os.path.join(REPO, "pretrain_acodm.py")
EXPERT_RECORD = "expert.json"

# The base run's settings an expert keeps besides the model and its parallel layout.
_INHERITED_SETTINGS = (
    "micro_batch_size", "global_batch_size", "weight_decay", "adam_beta1", "adam_beta2", "adam_eps", "clip_grad",
    "seed", "split", "data_cache_path", "tokenizer_type", "tokenizer_model", "vocab_size",
    "reset_position_ids", "reset_attention_mask", "eod_mask_loss",
)


@dataclass(frozen=True)
class Base:
    """The base checkpoint: the latest one under a `--save` folder."""

    folder: str
    path: str  # its iter_NNNNNNN folder
    iteration: int
    fingerprint: str  # of its common state and tensor index: another checkpoint at the same path differs
    args: dict  # the arguments the base run was saved with

    def identity(self) -> dict:
        return {"path": self.path, "iteration": self.iteration, "fingerprint": self.fingerprint}


def checkpoint_fingerprint(path: str) -> str:
    digest = hashlib.sha256()
    for name in (COMMON_STATE, ".metadata"):
        with open(os.path.join(path, name), "rb") as stream:
            digest.update(stream.read())
    return digest.hexdigest()[:16]


def open_base(folder: str) -> Base:
    opened = open_checkpoint(folder)
    if opened is None:
        raise UserError(
            f"--base {folder}: no checkpoint there (no latest_checkpointed_iteration.txt); give the --save folder of a "
            f"pretrain_acodm.py run, e.g. a short uniform run"
        )
    path, state = opened
    return Base(os.path.abspath(folder), os.path.abspath(path), state["iteration"], checkpoint_fingerprint(path), state["args"])


def launcher(processes: int) -> list[str]:
    """How a distributed program starts: plainly for one process, under torchrun for several."""
    if processes == 1:
        return [sys.executable]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]


def model_arguments(base: Base, tensor_parallel: int, pipeline_parallel: int) -> dict:
    """The base run's model, batch, optimizer and tokenizer arguments at the given model-parallel layout."""
    names = [*argument_names("model"), *argument_names("parallelism"), *_INHERITED_SETTINGS]
    values = {name: base.args.get(name) for name in names}
    values.update(tensor_model_parallel_size=tensor_parallel, pipeline_model_parallel_size=pipeline_parallel)
    return values


@dataclass
class ExpertSettings:
    iterations: int
    lr: float
    tensor_parallel: int
    pipeline_parallel: int


class Expert:
    """The expert of one domain, in `<work_dir>/experts/<domain>/`."""

    def __init__(self, work_dir: str, domain: Domain, tokenizer: Optional[dict], base: Base, settings: ExpertSettings):
        self.domain, self.tokenizer, self.base, self.settings = domain, tokenizer, base, settings
        self.folder = os.path.join(os.path.abspath(work_dir), "experts", domain.name)
        self.checkpoints = os.path.join(self.folder, "checkpoints")
        self.data_path = os.path.join(self.folder, "domain.json")

    def record(self) -> dict:
        settings = self.settings
        return {
            "base": self.base.identity(),
            "domain": {"name": self.domain.name, "prefix": self.domain.prefix, "tokens": self.domain.tokens},
            "expert_iters": settings.iterations,
            "lr": settings.lr,
            "layout": {"tensor_model_parallel_size": settings.tensor_parallel, "pipeline_model_parallel_size": settings.pipeline_parallel},
        }

    @property
    def checkpoint(self) -> str:
        """Its final checkpoint: the one the merge reads."""
        return checkpoint_path(self.checkpoints, self.settings.iterations)

    def status(self) -> str:
        """'new', 'partial' (interrupted: the trainer resumes it) or 'complete'; refuses a foreign expert."""
        record_path = os.path.join(self.folder, EXPERT_RECORD)
        if not os.path.isfile(record_path):
            if os.path.isdir(self.checkpoints):
                raise UserError(
                    f"{self.folder}: checkpoints without {EXPERT_RECORD}, not an expert this tool made; delete the "
                    f"folder or give another --work-dir"
                )
            return "new"
        with open(record_path, encoding="utf-8") as stream:
            saved = json.load(stream)
        self._refuse_difference(saved, self.record())
        opened = open_checkpoint(self.checkpoints)
        if opened is None:
            return "partial"
        return "complete" if opened[1]["iteration"] >= self.settings.iterations else "partial"

    def _refuse_difference(self, saved: dict, wanted: dict) -> None:
        fix = f"delete {self.folder} to train it again, or give another --work-dir"
        if saved["base"] != wanted["base"]:
            base = saved["base"]
            raise UserError(
                f"{self.folder}: this expert was trained from {base['path']} (iteration {base['iteration']}, fingerprint "
                f"{base['fingerprint']}), not from --base {self.base.path} (fingerprint {self.base.fingerprint}); {fix}"
            )
        if saved["domain"] != wanted["domain"]:
            domain = saved["domain"]
            raise UserError(
                f"{self.folder}: this expert was trained on {domain['prefix']} ({domain['tokens']} tokens), --data-path now "
                f"gives domain {self.domain.name!r} as {self.domain.prefix} ({self.domain.tokens} tokens); {fix}"
            )
        for key, flag in (("expert_iters", "--expert-iters"), ("lr", "--expert-lr")):
            if saved[key] != wanted[key]:
                raise UserError(f"{self.folder}: this expert was trained with {flag} {saved[key]}, this search asks {wanted[key]}; give {flag} {saved[key]} or {fix}")
        if saved["layout"] != wanted["layout"]:
            layout = saved["layout"]
            raise UserError(
                f"{self.folder}: this expert was trained at --tensor-model-parallel-size {layout['tensor_model_parallel_size']} "
                f"--pipeline-model-parallel-size {layout['pipeline_model_parallel_size']} and is merged at its own layout; "
                f"give those, or {fix}"
            )

    def prepare(self) -> None:
        """Its folder, record and one-domain data manifest, before its first run."""
        os.makedirs(self.folder, exist_ok=True)
        Manifest(domains=[self.domain], tokenizer=self.tokenizer).save(self.data_path)
        write_text_atomically(os.path.join(self.folder, EXPERT_RECORD), json.dumps(self.record(), indent=2) + "\n")

    def command(self, processes: int) -> list[str]:
        settings = self.settings
        values = model_arguments(self.base, settings.tensor_parallel, settings.pipeline_parallel)
        values.update(
            data_path=[self.data_path], train_iters=settings.iterations, lr=settings.lr, min_lr=0.0,
            lr_decay_style="constant", mixer="static", pretrained_checkpoint=self.base.folder,
            save=self.checkpoints, load=self.checkpoints, save_interval=max(1, settings.iterations // 2),
            exit_signal_handler=True, eval_iters=0, log_interval=max(1, settings.iterations // 10),
            metrics_path=os.path.join(self.folder, "metrics.jsonl"),
        )
        return [*launcher(processes), TRAINER, *command_line(values)]
