"""Logging that a flood cannot turn into a flood of log lines."""

from __future__ import annotations

import logging
import time

from pidaemon.eventlog import LOGGER_NAME

LOG_EVERY = 60.0


class Throttled:
    """Logs each kind of trouble at most once a minute, with how many were left out."""

    def __init__(self) -> None:
        self.log = logging.getLogger(LOGGER_NAME)
        self.last: dict[str, float] = {}
        self.skipped: dict[str, int] = {}

    def __call__(self, kind: str, message: str, level: int = logging.WARNING,
                 exc_info: BaseException | None = None) -> None:
        now = time.monotonic()
        if now - self.last.get(kind, -LOG_EVERY) < LOG_EVERY:
            self.skipped[kind] = self.skipped.get(kind, 0) + 1
            return
        self.last[kind] = now
        skipped = self.skipped.pop(kind, 0)
        more = f" ({skipped} more like it in the last minute)" if skipped else ""
        self.log.log(level, f"http: {message}{more}", exc_info=exc_info,
                     extra={"event": "http", "fields": {"kind": kind}})
