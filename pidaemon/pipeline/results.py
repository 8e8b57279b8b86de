"""The results thread: every result and each output.interval's stats, handed to the outputs.

Outputs run here rather than in the inference thread so that a slow terminal, journal or broker
never delays the model.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Protocol

from pidaemon.pipeline.framequeue import DropOldestQueue, QueueClosed
from pidaemon.pipeline.frames import Result
from pidaemon.pipeline.worker import Worker


@dataclass(frozen=True)
class Window:
    """One camera's results in one output.interval."""

    fps: float
    latency_p50_ms: float | None
    latency_p95_ms: float | None


class ResultListener(Protocol):
    def on_result(self, result: Result) -> None:
        """One processed frame."""

    def on_windows(self, windows: dict[str | None, Window]) -> None:
        """The end of one output.interval window: each camera that had results in it."""


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
        by_camera: dict[str | None, list[Result]] = {}
        for result in self._window:
            by_camera.setdefault(result.camera, []).append(result)
        windows = {camera: _window(results, elapsed)
                   for camera, results in by_camera.items()}
        self._window = []
        self._window_start = now
        self.listener.on_windows(windows)


def _window(results: list[Result], elapsed: float) -> Window:
    latencies = sorted(r.latency_ms for r in results)
    p50 = statistics.median(latencies)
    p95 = latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))]
    return Window(len(results) / elapsed, p50, p95)
