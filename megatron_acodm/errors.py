"""The one exception type for bad user input, and how an entry point reports it: one line, exit 2."""

import os
import sys
import time

EXIT_STATUS = 2  # argparse's status for a usage error
_SILENT_RANK_GRACE_S = 2.0


class UserError(ValueError):
    """Bad input (data, arguments, checkpoints): the message names the file or argument and the fix.

    Most bad inputs are seen alike by every rank, and only rank 0 reports them; `rank_local` marks
    one that only the raising rank can see (a sample it alone reads), which that rank reports.
    """

    def __init__(self, message: str, rank_local: bool = False):
        super().__init__(message)
        self.rank_local = rank_local


def report_error(line: str, rank_local: bool = False) -> int:
    """Print `line` once for the whole job (rank 0, or the rank that alone saw the problem)."""
    if rank_local or int(os.environ.get("RANK", "0")) == 0:
        print(line, file=sys.stderr, flush=True)
    else:
        # torchrun stops every rank once one exits: let rank 0 print before this one does.
        time.sleep(_SILENT_RANK_GRACE_S)
    return EXIT_STATUS
