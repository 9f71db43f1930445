"""`--exit-signal-handler`: turn SIGTERM (a cluster's preemption) and SIGINT (Ctrl-C) into a clean exit.

The handler only remembers the signal; the loop asks after every step whether any rank got one
(the signal may reach one rank, or all at slightly different steps), so every rank finishes the
same step, saves the same checkpoint and leaves together. A second signal while the first is being
honoured is not caught: it acts as it would without the handler.
"""

from __future__ import annotations

import signal
from typing import Optional

import torch

EXIT_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class ExitSignalHandler:
    def __init__(self, device: torch.device):
        self.device = device
        self.received: Optional[int] = None
        self._previous = {number: signal.signal(number, self._remember) for number in EXIT_SIGNALS}

    def _remember(self, number: int, frame) -> None:
        self.received = number
        self.release()

    def any_rank_received(self) -> bool:
        """Whether some rank got a signal; a collective, so every rank calls it after every step."""
        flag = torch.tensor([0 if self.received is None else 1], dtype=torch.int32, device=self.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item())

    def release(self) -> None:
        """Give the signals back to the handlers that were there before."""
        for number, previous in self._previous.items():
            signal.signal(number, previous)
