"""Ctrl-C (SIGINT) and SIGTERM during training stop the run at the end of a step, on every rank
together, so the checkpoint written there holds exactly that step.

Python turns SIGINT into a ``KeyboardInterrupt`` wherever the main thread happens to be: between
``optimizer.step()`` and the step count, or in one rank while the others wait in an all-reduce.
While :class:`DeferredInterrupts` is installed a signal only sets a flag; at the end of every step the ranks
ask :meth:`DeferredInterrupts.stop_requested` (an all-reduce of the flags), and all of them save
and stop at the same step.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

import torch

from prdit.training import distributed as D

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def launched_by_torchrun() -> bool:
    """True in a worker started by torchrun, which forwards the terminal's Ctrl-C once more."""
    return "TORCHELASTIC_RUN_ID" in os.environ or "RANK" in os.environ


def ignore_interrupts(worker_id: int = 0) -> None:
    """In a DataLoader worker: leave SIGINT and SIGTERM to the training process.

    A Ctrl-C in the terminal, or a scheduler's SIGTERM, reaches every process of the job; a worker
    that died of it would fail the batch the training process still needs to finish its step.
    """
    for signum in SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


class DeferredInterrupts:
    """Between :meth:`install` and :meth:`restore`: SIGINT and SIGTERM are held until the next
    :meth:`stop_requested`.

    ``second_stops_at_once``: a second Ctrl-C raises ``KeyboardInterrupt`` at once (a single
    process, for a step that would take too long); under torchrun it is absorbed, because
    torchrun sends every worker the terminal's Ctrl-C a second time, and ends workers that do not
    stop within its ``--shutdown-timeout`` itself. Outside the main thread nothing is installed.
    """

    def __init__(self, second_stops_at_once: bool, announce: bool = True) -> None:
        self.second_stops_at_once, self.announce = second_stops_at_once, announce
        self.received: int | None = None
        self.acted_on = False
        self._previous: dict[int, object] = {}

    def install(self) -> None:
        """Hold SIGINT and SIGTERM from now on."""
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._hold)

    def _hold(self, signum: int, frame) -> None:
        if self.received is not None:
            if self.second_stops_at_once and signum == signal.SIGINT:
                raise KeyboardInterrupt
            return
        self.received = signum
        if self.announce:
            hint = "; Ctrl-C again stops at once, without it" if self.second_stops_at_once else ""
            # os.write, not print: the handler may run in the middle of a print to stderr.
            os.write(sys.stderr.fileno(), f"\n{signal.Signals(signum).name}: stopping with a checkpoint "
                                          f"when the current step ends{hint}\n".encode())

    def stop_requested(self, device: torch.device) -> bool:
        """At a step boundary, on every rank: whether any rank received a signal."""
        flag = torch.tensor([float(self.received is not None)], device=device)
        stop = D.all_reduce(flag, "max").item() > 0
        self.acted_on = self.acted_on or stop
        return stop

    def restore(self) -> None:
        """The handlers from before :meth:`install`."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def redeliver(self) -> None:
        """After :meth:`restore`: a signal that came after the last check takes effect now."""
        if self.received is not None and not self.acted_on:
            self.acted_on = True
            signal.raise_signal(self.received)
