"""Pretrain a GPT with megatron.core while a mixer decides the data mixture online.

    torchrun --nproc-per-node N pretrain_acodm.py <Megatron arguments> --data-path domains.json --mixer odm

Shaped like Megatron-LM's pretrain_gpt.py: the model provider is `megatron_acodm.model`, the data
provider the per-domain DynamicBlender, the forward step and loss `megatron_acodm.training.step`
and `.loss`, and `pretrain()` the loop in `megatron_acodm.training.loop`.
"""

from __future__ import annotations

import sys

INTERRUPTED = (
    "interrupted: stopped without saving (the checkpoints already written are kept; with "
    "--exit-signal-handler a Ctrl-C or SIGTERM first finishes the step and saves)"
)


def main(argv=None) -> int:
    from megatron_acodm.errors import interrupts_held, run_reporting_errors

    def train() -> None:
        # Imported here, so that a Ctrl-C during the imports is reported like any other (held to
        # their end: a library's bare `except:` around an optional import would swallow it).
        with interrupts_held():
            from megatron_acodm.compat.megatron_versions import check_supported

            check_supported()  # before megatron.core loads: another release is refused in one line
            from megatron_acodm.arguments import parse_args
            from megatron_acodm.training.loop import pretrain
        pretrain(parse_args(argv))

    return run_reporting_errors(train, INTERRUPTED)


if __name__ == "__main__":  # dist_checkpointing's saver spawns processes that re-import this file
    sys.exit(main())
