"""A one-line progress bar on a terminal, nothing at all in a pipe or the journal."""

from __future__ import annotations

import sys
import time
from typing import TextIO

WIDTH = 30


class Progress:
    def __init__(self, what: str, total: int, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self.what = what
        self.total = max(total, 1)
        self.done = 0
        self.started = time.monotonic()

    def advance(self, n: int = 1) -> None:
        self.done = min(self.total, self.done + n)
        if not self.enabled:
            return
        filled = round(WIDTH * self.done / self.total)
        elapsed = time.monotonic() - self.started
        self.stream.write(f"\r{self.what} [{'#' * filled}{'.' * (WIDTH - filled)}] "
                          f"{self.done}/{self.total} {elapsed:.0f} s")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
