"""The results thread: every result and each output.interval's stats, handed to the outputs.

Outputs run here rather than in the inference thread so that a slow terminal, journal or broker
never delays the model.
"""

from __future__ import annotations

import statistics
import time
from typing import Protocol

from pidaemon.pipeline.framequeue import DropOldestQueue, QueueClosed
from pidaemon.pipeline.frames import Result
from pidaemon.pipeline.worker import Worker


class ResultListener(Protocol):
    def on_result(self, result: Result) -> None:
        """One processed frame."""

    def on_window(self, fps: float, latency_p50_ms: float | None,
                  latency_p95_ms: float | None, last: Result | None) -> None:
        """The end of one output.interval window."""


class ResultsWorker(Worker):
    def __init__(self, results: DropOldestQueue[Result], interval: float,
                 listener: ResultListener) -> None:
        super().__init__("results")
        self.results = results
        self.interval = interval  # a reload may change it
        self.listener = listener
        self.last: Result | None = None
        self._window: list[Result] = []
        self._window_start = time.monotonic()

    def step(self) -> None:
        due = self._window_start + self.interval
        try:
            result = self.results.get(timeout=max(0.0, min(0.5, due - time.monotonic())))
        except QueueClosed:
            self.stop_event.set()
            return
        if result is not None:
            self.last = result
            self._window.append(result)
            self.listener.on_result(result)
        if time.monotonic() >= due:
            self._close_window()

    def _close_window(self) -> None:
        now = time.monotonic()
        elapsed = max(now - self._window_start, 1e-6)
        latencies = sorted(r.latency_ms for r in self._window)
        p50 = statistics.median(latencies) if latencies else None
        p95 = latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))] if latencies else None
        fps = len(self._window) / elapsed
        self._window = []
        self._window_start = now
        self.listener.on_window(fps, p50, p95, self.last)
