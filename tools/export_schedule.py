#!/usr/bin/env python
"""Write the mixture a run followed as a schedule another run replays, or as a static blend.

    python tools/export_schedule.py METRICS.jsonl -o schedule.json [--phases N] [--source weights|shares]
    pretrain_acodm.py ... --mixer schedule --mixing-schedule schedule.json     # replay it

`--source weights` (default): the mixer's logged weights; `shares`: the shares of samples each
step drew. Without `--phases` a point starts wherever the logged mixture changes; with
`--phases N`, N phases of equal length, each the mean over its steps. Points are fractions of the
run, so a short proxy run's schedule stretches over a longer target. `--phases 1` writes a static
blend instead (a domains.json with a weight per domain, as tools/mergemix.py writes), for
`--data-path blend.json --mixer static` or `--mixing-prior blend.json`.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence

from megatron_acodm.arguments import OneLineArgumentParser
from megatron_acodm.atomic_files import write_text_atomically
from megatron_acodm.errors import run_reporting_errors
from megatron_acodm.mixing.schedule_export import SOURCES, blend_manifest, schedule_document
from megatron_acodm.output_paths import check_output_file


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = OneLineArgumentParser(prog="export_schedule.py", description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("metrics", metavar="METRICS.jsonl", help="the metrics file of the run whose mixture to export")
    parser.add_argument("-o", "--output", required=True, help="the schedule (or, with --phases 1, blend) file to write")
    parser.add_argument("--phases", type=int, default=None, help="coarsen to this many phases of equal length")
    parser.add_argument("--source", choices=SOURCES, default="weights", help="the mixer's weights, or the shares drawn")
    return parser.parse_args(argv)


def export(args: argparse.Namespace) -> None:
    check_output_file(args.output, "--output", "schedule.json")
    if args.phases == 1:
        blend_manifest(args.metrics, args.output, args.source).save(args.output)
        print(f"wrote the static blend {args.output}: use it as --data-path {args.output} --mixer static")
        return
    document = schedule_document(args.metrics, args.source, args.phases)
    write_text_atomically(args.output, json.dumps(document, indent=2) + "\n")
    print(f"wrote {args.output} ({len(document['points'])} points): replay it with --mixer schedule --mixing-schedule {args.output}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    return run_reporting_errors(lambda: export(args), "interrupted: nothing was written")


if __name__ == "__main__":
    sys.exit(main())
