"""Pretrain a GPT with megatron.core while a mixer decides the data mixture online.

    torchrun --nproc-per-node N pretrain_acodm.py <Megatron arguments> --data-path domains.json --mixer odm

Shaped like Megatron-LM's pretrain_gpt.py: the model provider is `megatron_acodm.model`, the data
provider the per-domain DynamicBlender, the forward step and loss `megatron_acodm.training.step`
and `.loss`, and `pretrain()` the loop in `megatron_acodm.training.loop`.
"""

from __future__ import annotations

import sys


def main(argv=None) -> int:
    from megatron_acodm.arguments import parse_args

    args = parse_args(argv)
    from megatron_acodm.errors import UserError, report_error
    from megatron_acodm.training.loop import pretrain

    try:
        pretrain(args)
    except UserError as error:
        return report_error(f"error: {error}", rank_local=error.rank_local)
    return 0


if __name__ == "__main__":  # dist_checkpointing's saver spawns processes that re-import this file
    sys.exit(main())
