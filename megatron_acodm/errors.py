"""The one exception type for bad user input, and how an entry point reports it: one line, exit 2.

Under torchrun every rank of a job may meet the same bad input, or only one rank may (a sample it
alone reads). The line is printed once for the whole job: the first rank to report claims it in
torchrun's own key-value store, which outlives any rank, and leaves its line there; the others
stay silent. Each rank writes that line, the job's, to the error file torchrun gives it
(`TORCHELASTIC_ERROR_FILE`, the file its `@record` writes), so torchrun's failure summary names the
line printed, rather than a documentation link or another rank's own line (ranks that read
different samples may each find another bad one), whichever rank torchrun saw exit first.
"""

import contextlib
import datetime
import json
import os
import signal
import sys
import threading
import time
from typing import Callable, Iterator, Optional

EXIT_STATUS = 2  # argparse's status for a usage error
INTERRUPTED_STATUS = 130  # 128 + SIGINT
_SILENT_RANK_GRACE_S = 2.0  # torchrun stops every rank once one exits: let the reporting rank print first
_STORE_TIMEOUT_S = 5.0


class UserError(ValueError):
    """Bad input (data, arguments, checkpoints): the message names the file or argument and the fix.

    `rank_local` marks a problem only the raising rank can see (a sample it alone reads): where no
    torchrun store decides who prints, that rank prints it; otherwise rank 0 prints for the job.
    """

    def __init__(self, message: str, rank_local: bool = False):
        super().__init__(message)
        self.rank_local = rank_local


def _claim_in_torchrun_store(line: str) -> tuple[bool, str] | None:
    """Whether this rank is the first of its job to report an error, and the job's line: this rank's
    when it is, the first one's otherwise; None without torchrun's store."""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    try:
        from torch.distributed import TCPStore

        store = TCPStore(
            os.environ["MASTER_ADDR"],
            int(os.environ["MASTER_PORT"]),
            is_master=False,
            timeout=datetime.timedelta(seconds=_STORE_TIMEOUT_S),
        )
        # A restarted job (torchrun --max-restarts) reports again: the key names the attempt.
        key = f"megatron_acodm/error_reported/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
        if store.add(key, 1) == 1:
            store.set(f"{key}/line", line)
            return True, line
        return False, store.get(f"{key}/line").decode("utf-8")  # waits for the first rank's set
    except Exception:  # the store is gone or unreachable: fall back to rank 0
        return None


def _leave_for_torchrun(line: str) -> None:
    """Write `line` where torchrun's failure summary reads a rank's error (as its `@record` would)."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return
    timestamp = str(int(time.time()))
    record = {"message": {"message": line, "extraInfo": {"py_callstack": line, "timestamp": timestamp}}}
    try:
        with open(path, "w", encoding="utf-8") as stream:
            json.dump(record, stream)
    except OSError:
        pass  # the summary then shows torchrun's own words; the line is printed all the same


def _report_once(line: str, rank_local: bool) -> None:
    """Print `line` once for the whole job, and leave the job's line for torchrun."""
    claimed = _claim_in_torchrun_store(line)
    first, job_line = claimed if claimed is not None else (rank_local or int(os.environ.get("RANK", "0")) == 0, line)
    _leave_for_torchrun(job_line)
    if first:
        print(line, file=sys.stderr, flush=True)
    else:
        time.sleep(_SILENT_RANK_GRACE_S)


def report_error(line: str, rank_local: bool = False) -> int:
    """Print `line` once for the whole job, leave the job's line for torchrun; return the exit status."""
    _report_once(line, rank_local)
    return EXIT_STATUS


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """Hold a Ctrl-C (SIGINT) back until the block ends, then raise it. For a block of imports:
    megatron.core, among others, wraps its optional imports in a bare `except:`, which swallows a
    KeyboardInterrupt that strikes inside one, and the run would go on as if no Ctrl-C had come.
    A SIGINT the process ignores (a job started in the background) stays ignored; off the main
    thread, where no handler can be set, nothing is held."""
    received: list[int] = []
    previous = signal.getsignal(signal.SIGINT)
    if previous == signal.SIG_IGN or threading.current_thread() is not threading.main_thread():
        yield
        return
    signal.signal(signal.SIGINT, lambda number, frame: received.append(number))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def run_reporting_errors(body: Callable[[], Optional[int]], interrupted: str) -> int:
    """An entry point's `body()`, its exit status: bad input is one `error:` line (2), Ctrl-C the
    one line `interrupted` (130, as a shell reports it) instead of a traceback from wherever it struck."""
    try:
        return body() or 0
    except UserError as error:
        return report_error(f"error: {error}", rank_local=error.rank_local)
    except KeyboardInterrupt:
        _report_once(interrupted, rank_local=False)
        return INTERRUPTED_STATUS
