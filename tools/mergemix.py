#!/usr/bin/env python
"""MergeMix (arXiv 2601.17858): find a data mixture offline by merging briefly trained domain experts.

    python tools/mergemix.py --base CKPT --data-path domains.json --output blend.json
        [--objective uniform|tokens|data-path|NAME[,NAME...]|target] [--target-data-path T ...]
        [--expert-iters 50] [--expert-lr LR] [--seed-mixtures 32] [--search-rounds 3] [--proposals 4]
        [--min-weight 0] [--work-dir DIR] [--nproc-per-node N]
        [--tensor-model-parallel-size TP --pipeline-model-parallel-size PP]

1. Experts: from the base checkpoint (the `--save` folder of a pretrain_acodm.py run, e.g. a short
   uniform one), one expert per domain, `--expert-iters` steps at a constant learning rate on that
   domain alone, trained by pretrain_acodm.py itself with the base run's model, batch and optimizer
   settings. Experts that exist and match are reused; an interrupted one resumes.
2. Search: the merged model `theta_base + sum_k a_k (theta_k - theta_base)` stands in for a model
   trained on mixture a. It is evaluated with the trainer's evaluation at seed mixtures (uniform,
   the corners, Dirichlet samples), then for `--search-rounds` rounds a Gaussian-process surrogate
   of the objective proposes the mixtures it predicts best and each is verified by a real merge.
   Every evaluation is a line of `<work-dir>/search-<settings>.jsonl`; a search run again reads
   back what it had evaluated and goes on.
3. Output: the best evaluated mixture as a blend file, a domains.json with a weight per domain and
   its provenance: `--data-path blend.json --mixer static` trains on it, `--mixing-prior blend.json`
   starts an online mixer from it.

The objective (lower is better): the validation loss averaged over domains alike (uniform), by
corpus tokens (tokens), by the --data-path weights (data-path), over the named domains, or the loss
on the steering examples of the target sets of --target-data-path (target; their held-out loss is
recorded beside it, never searched on).
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from megatron_acodm.arguments import OneLineArgumentParser
from megatron_acodm.errors import run_reporting_errors
from megatron_acodm.mergemix.pipeline import mergemix
from megatron_acodm.mixing.alignment import TARGET


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = OneLineArgumentParser(
        prog="mergemix.py", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    add = parser.add_argument
    add("--base", required=True, help="the --save folder of a pretrain_acodm.py run: its latest checkpoint is the base")
    add("--data-path", nargs="+", required=True, help="the domains to mix: a domains.json, or [w1] prefix1 [w2] prefix2 ...")
    add("--output", required=True, help="the blend file to write (a domains.json with the found weights)")
    add("--objective", default="uniform", help="what the mixture lowers: uniform, tokens, data-path, NAME[,NAME...] or target")
    add("--target-data-path", nargs="+", default=None, help="target sets (as pretrain_acodm.py's), for --objective target")
    add("--target-split", default="50,50", help="steering,held-out shares of each target set's documents")
    add("--expert-iters", type=int, default=50, help="training steps of each domain expert")
    add("--expert-lr", type=float, default=None, help="the experts' constant learning rate (default: the base run's --lr)")
    add("--seed-mixtures", type=int, default=32, help="mixtures evaluated before the surrogate: uniform, the corners, Dirichlet samples")
    add("--search-rounds", type=int, default=3, help="rounds of surrogate fit, proposals and their real merges")
    add("--proposals", type=int, default=4, help="mixtures each round verifies by a real merge")
    add("--min-weight", type=float, default=0.0, help="every domain's least weight in the search (> 0 for a blend used as --mixing-prior)")
    add("--eval-iters", type=int, default=None, help="global batches of validation samples per evaluation (default: the base run's)")
    add("--seed", type=int, default=1234, help="the search's seed (seed mixtures, surrogate)")
    add("--work-dir", default=None, help="experts and results (default: <output without .json>.mergemix/)")
    add("--nproc-per-node", type=int, default=None, help="processes of each expert run and of the search (default: the base run's)")
    add("--tensor-model-parallel-size", type=int, default=None, help="the experts' and the merge's (default: the base run's)")
    add("--pipeline-model-parallel-size", type=int, default=None, help="the experts' and the merge's (default: the base run's)")
    args = parser.parse_args(argv)
    problem = next((message for failed, message in (
        (args.expert_iters < 1, "--expert-iters must be >= 1"),
        (args.expert_lr is not None and not args.expert_lr > 0, "--expert-lr must be positive"),
        (args.search_rounds < 0 or args.proposals < 1, "--search-rounds must be >= 0 and --proposals >= 1"),
        (args.objective == TARGET and not args.target_data_path, "--objective target needs --target-data-path (the target sets to lower)"),
        (not args.output.endswith(".json"), f"--output {args.output}: give a .json file name (the blend is a domains.json)"),
    ) if failed), None)
    if problem:
        parser.error(problem)
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    return run_reporting_errors(
        lambda: mergemix(args), "interrupted: run the same command again to go on (finished experts and evaluations are kept)"
    )


if __name__ == "__main__":
    sys.exit(main())
