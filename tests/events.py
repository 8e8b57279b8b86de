"""The daemon's log events as a test reads them, whether it runs as a process or in-process."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable


class EventStream:
    """Events arrive on `lines` (None marks the end) and are kept in `events` once taken."""

    def __init__(self) -> None:
        self.events: list[dict] = []
        self.lines: queue.Queue[dict | None] = queue.Queue()

    def describe_end(self) -> str:
        """What a failed wait adds to its message: how the daemon is doing."""
        return ""

    def _take(self, timeout: float) -> dict | None:
        """Collect the next event; None when none came in time or the output has ended."""
        try:
            event = self.lines.get(timeout=timeout) if timeout > 0 else self.lines.get_nowait()
        except queue.Empty:
            return None
        if event is None:
            self.lines.put(None)  # the end stays visible to later calls
            return None
        self.events.append(event)
        return event

    def wait_for(self, predicate: Callable[[dict], bool], timeout: float = 60) -> dict:
        """Collect events until one matches; fails with what was seen so far."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            event = self._take(left)
            if event is None:
                break
            if predicate(event):
                return event
        raise AssertionError(f"no matching event within {timeout} s; {self.describe_end()} "
                             f"last events={self.events[-8:]}")

    def seen_or_wait(self, predicate: Callable[[dict], bool], timeout: float = 60) -> dict:
        """An event already collected that matches, else the next one that does."""
        for event in self.events:
            if predicate(event):
                return event
        return self.wait_for(predicate, timeout)

    def drain(self) -> None:
        """Collect the events already written, without waiting."""
        while self._take(0) is not None:
            pass

    def of(self, event: str) -> list[dict]:
        return [e for e in self.events if e.get("event") == event]
