"""The log output: prediction and stats lines, as text, JSON or journal entries (see eventlog).

With `cameras:` every line names its camera (JSON `camera`, journal PI_INFER_CAMERA).
"""

from __future__ import annotations

from pidaemon.config import Config, OutputConfig
from pidaemon.eventlog import emit
from pidaemon.pipeline.frames import Result
from pidaemon.pipeline.sink import Sink
from pidaemon.pipeline.snapshot import Snapshot
from pidaemon.pipeline.state import StateChange


class LogSink(Sink):
    def __init__(self, output: OutputConfig) -> None:
        self.output = output

    def reconfigure(self, config: Config) -> None:
        self.output = config.output

    def on_result(self, result: Result, labels: list[str]) -> None:
        if not self.output.every_frame:
            return
        if not result.regions:
            self._prediction(result, result.classes, result.scores, labels)
        for region in result.regions:  # one line per region, named
            self._prediction(result, region.classes, region.scores, region.labels, region.name)

    def _prediction(self, result: Result, classes: list[int], scores: list[float],
                    labels: list[str], region: str | None = None) -> None:
        kept = [(c, s) for c, s in zip(classes, scores, strict=True)
                if s >= self.output.min_score]
        if not kept:
            return
        latency = result.latency_ms
        text = " | ".join(f"{labels[c]} ({c}) {s:.3f}" for c, s in kept)
        where = {} if result.camera is None else {"camera": result.camera}
        if region is not None:
            where["region"] = region
        named = " ".join(where.values())
        emit("prediction", f"prediction seq={result.seq}{' ' + named if named else ''} "
             f"latency_ms={latency:.1f}: {text}",
             seq=result.seq, **where, classes=[c for c, _ in kept],
             labels=[labels[c] for c, _ in kept],
             scores=[round(s, 4) for _, s in kept], latency_ms=round(latency, 2),
             label=labels[kept[0][0]], score=round(kept[0][1], 4))

    def on_state(self, change: StateChange) -> None:
        where = {} if change.camera is None else {"camera": change.camera}
        emit("state", f"state: {change.camera + ' ' if change.camera else ''}{change.region} is "
             f"{change.state} (was {change.previous}, score {change.score:.3f})", **where,
             region=change.region, state=change.state,
             previous=change.previous, score=change.score)

    def on_stats(self, snapshot: Snapshot) -> None:
        if snapshot.cameras:  # each camera had its own line
            return
        stats = snapshot.stats
        f = stats.fields()
        if snapshot.camera is not None:
            f = {"camera": snapshot.camera, **f}
        latency = "-" if f["latency_p50_ms"] is None else f"{f['latency_p50_ms']:.1f}"
        top = "-" if stats.label is None else f"{stats.label} score={stats.score:.3f}"
        emit("stats", f"stats: {'camera=' + snapshot.camera + ' ' if snapshot.camera else ''}"
             f"fps={stats.fps:.1f} latency_p50_ms={latency} "
             f"dropped={f['dropped']} captured={f['captured']} processed={f['processed']} "
             f"top1={top}", **f)
