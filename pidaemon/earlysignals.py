"""Signals that arrive before the service can act on them are recorded, not fatal.

Importing the CLI, torch and OpenCV takes from a few tenths of a second on a PC to seconds on a
Pi. Until the service installs its handlers, SIGTERM and SIGHUP would end the process by their
default action, silently: no "stopped" line, and a reload request (`systemctl reload` right
after start) would kill the daemon. So the process entry records them first thing; the service
then acts on what was recorded (stop with the usual lines, or reload once running), and every
other command gets the default behaviour back, including a recorded stop.
"""

from __future__ import annotations

import os
import signal
from types import FrameType

# SIGUSR1/2 would also end the process by default; the service logs and ignores them.
RECORDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
STOPS = (signal.SIGTERM, signal.SIGINT)

_pending: list[int] = []


def _record(signum: int, _frame: FrameType | None) -> None:
    _pending.append(signum)


def install() -> None:
    """Record the signals in RECORDED from now on (the process entry's first act)."""
    for signum in RECORDED:
        signal.signal(signum, _record)


def take() -> list[int]:
    """The signals recorded so far, oldest first; forgets them."""
    taken = list(_pending)
    del _pending[: len(taken)]
    return taken


def restore_defaults() -> None:
    """For commands other than `run`: default handlers again, and a recorded stop delivered."""
    for signum in RECORDED:
        handler = signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
        if signal.getsignal(signum) is _record:
            signal.signal(signum, handler)
    stops = [s for s in take() if s in STOPS]
    if stops:
        os.kill(os.getpid(), stops[0])

