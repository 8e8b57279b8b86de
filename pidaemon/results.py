"""The results thread: predictions and periodic stats to the log (and from there the journal).

Writing happens here rather than in the inference thread so that a slow terminal or journal
never delays the model.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from pidaemon.config import OutputConfig
from pidaemon.eventlog import emit
from pidaemon.framequeue import DropOldestQueue, QueueClosed
from pidaemon.inference import Result
from pidaemon.worker import Worker


@dataclass
class Counters:
    """Totals since start, read from the other workers when a stats line is due."""

    captured: int
    processed: int
    dropped: int
    bad_frames: int
    failed_frames: int


@dataclass
class Stats:
    fps: float
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    counters: Counters
    label: str | None
    score: float | None

    def fields(self) -> dict[str, object]:
        c = self.counters
        return {"fps": round(self.fps, 2), "latency_p50_ms": _round(self.latency_p50_ms),
                "latency_p95_ms": _round(self.latency_p95_ms), "dropped": c.dropped,
                "captured": c.captured, "processed": c.processed, "bad_frames": c.bad_frames,
                "failed_frames": c.failed_frames, "label": self.label,
                "score": _round(self.score, 4)}

    def summary(self) -> str:
        """The short form systemd shows as STATUS."""
        latency = f"{self.latency_p50_ms:.1f} ms" if self.latency_p50_ms is not None else "-"
        top = f"{self.label} ({self.score:.2f})" if self.label is not None else "-"
        return (f"{self.fps:.1f} fps, latency {latency}, dropped {self.counters.dropped}, "
                f"top-1 {top}")


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


class ResultsWorker(Worker):
    def __init__(self, results: DropOldestQueue[Result], labels: Callable[[], list[str]],
                 counters: Callable[[], Counters], output: OutputConfig,
                 on_stats: Callable[[Stats], None], on_result: Callable[[Result], None]) -> None:
        super().__init__("results")
        self.results = results
        self.labels = labels
        self.counters = counters
        self.output = output
        self.on_stats = on_stats
        self.on_result = on_result
        self.last: Result | None = None
        self._window: list[Result] = []
        self._window_start = time.monotonic()

    def step(self) -> None:
        due = self._window_start + self.output.interval
        try:
            result = self.results.get(timeout=max(0.0, min(0.5, due - time.monotonic())))
        except QueueClosed:
            self.stop_event.set()
            return
        if result is not None:
            self.last = result
            self._window.append(result)
            if self.output.every_frame:
                self._log_prediction(result)
            self.on_result(result)
        if time.monotonic() >= due:
            self._log_stats()

    def _log_prediction(self, result: Result) -> None:
        labels = self.labels()
        kept = [(c, s) for c, s in zip(result.classes, result.scores, strict=True)
                if s >= self.output.min_score]
        if not kept:
            return
        latency = (result.finished_at - result.captured_at) * 1000
        text = " | ".join(f"{labels[c]} ({c}) {s:.3f}" for c, s in kept)
        emit("prediction", f"prediction seq={result.seq} latency_ms={latency:.1f}: {text}",
             seq=result.seq, classes=[c for c, _ in kept], labels=[labels[c] for c, _ in kept],
             scores=[round(s, 4) for _, s in kept], latency_ms=round(latency, 2),
             label=labels[kept[0][0]], score=round(kept[0][1], 4))

    def current_stats(self, now: float) -> Stats:
        elapsed = max(now - self._window_start, 1e-6)
        latencies = sorted((r.finished_at - r.captured_at) * 1000 for r in self._window)
        p50 = statistics.median(latencies) if latencies else None
        p95 = latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))] if latencies else None
        label = score = None
        if self.last is not None and self.last.scores:
            label = self.labels()[self.last.classes[0]]
            score = self.last.scores[0]
        return Stats(len(self._window) / elapsed, p50, p95, self.counters(), label, score)

    def _log_stats(self) -> None:
        now = time.monotonic()
        stats = self.current_stats(now)
        self._window = []
        self._window_start = now
        f = stats.fields()
        latency = "-" if f["latency_p50_ms"] is None else f"{f['latency_p50_ms']:.1f}"
        top = "-" if stats.label is None else f"{stats.label} score={stats.score:.3f}"
        emit("stats", f"stats: fps={stats.fps:.1f} latency_p50_ms={latency} "
             f"dropped={f['dropped']} captured={f['captured']} processed={f['processed']} "
             f"top1={top}", **f)
        self.on_stats(stats)
