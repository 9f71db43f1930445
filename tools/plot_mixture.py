#!/usr/bin/env python
"""Plot a run's data mixture from its metrics JSONL: domain weights over iterations and validation loss.

    python tools/plot_mixture.py METRICS.jsonl [-o OUT.png]

The figure goes to OUT.png, by default `<stem>.png` next to the JSONL. Needs matplotlib
(`pip install matplotlib`, or the extra `megatron-acodm[plot]`).
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from megatron_acodm.errors import UserError
from megatron_acodm.metrics.plots import PlotDependencyError, plot_mixture


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("metrics", metavar="METRICS.jsonl", help="the metrics file a training run wrote")
    parser.add_argument("-o", "--output", metavar="OUT.png", help="where the figure goes (default: <stem>.png beside the JSONL)")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    try:
        output = plot_mixture(args.metrics, args.output)
    except (UserError, PlotDependencyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
