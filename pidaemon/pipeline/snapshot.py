"""The pipeline's state at one moment, as every output sees it.

Outputs (log, MQTT, metrics, systemd STATUS) are handed a Snapshot rather than reaching into
the workers or watching the log: what they show is what the pipeline says, in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

from pidaemon.pipeline.frames import Result
from pidaemon.sources import CameraState, Grant


@dataclass(frozen=True)
class Counters:
    """Totals since start; capture totals go on across camera restarts."""

    captured: int = 0
    processed: int = 0
    dropped: int = 0
    bad_frames: int = 0
    failed_frames: int = 0

    def __add__(self, other: Counters) -> Counters:
        return Counters(*(a + b for a, b in zip(self.as_tuple(), other.as_tuple(), strict=True)))

    def as_tuple(self) -> tuple[int, ...]:
        return (self.captured, self.processed, self.dropped, self.bad_frames, self.failed_frames)


@dataclass(frozen=True)
class Stats:
    """One output.interval's window: rate, latency, the latest top-1, and the totals."""

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


@dataclass(frozen=True)
class SourceStatus:
    """One source as the outputs see it."""

    device: str
    state: CameraState
    status: str  # "streaming /dev/video0: 640x480 MJPG at 30.0 fps", "waiting for camera ..."
    grant: Grant


@dataclass(frozen=True)
class RegionInfo:
    """A configured region as outputs announce it (Home Assistant's enum options: labels)."""

    name: str
    box: tuple[float, float, float, float]
    labels: list[str]
    camera: str | None = None  # the name in `cameras:`; None for the single `camera:`

    @property
    def topic(self) -> str:
        """Its MQTT topic levels and key in outputs: `gate`, or `garden/gate` with cameras."""
        return self.name if self.camera is None else f"{self.camera}/{self.name}"


@dataclass(frozen=True)
class ModelInfo:
    description: str
    engine: str
    labels: list[str]


@dataclass(frozen=True)
class Snapshot:
    sources: tuple[SourceStatus, ...]
    model: ModelInfo
    stats: Stats
    latest: Result | None
    # With `cameras:` outputs get one snapshot per camera (`camera` set) each interval, then
    # the whole (`cameras`: those per-camera snapshots); without, one snapshot as always.
    camera: str | None = None
    cameras: tuple[Snapshot, ...] = ()

    def status_fields(self) -> dict[str, object]:
        """The status JSON every output publishes (MQTT status topic, /api/status)."""
        return {**self.stats.fields(), "status": self.status}

    @property
    def status(self) -> str:
        """What systemd shows: a source that is down, else the stats summary.

        With several cameras, each in brief: `door 30.0 fps espresso · yard waiting for ...`.
        """
        if self.cameras:
            return " · ".join(part.brief() for part in self.cameras)
        down = [s.status for s in self.sources if s.state.is_down]
        return "; ".join(down) if down else self.stats.summary()

    def brief(self) -> str:
        """One camera's part of the STATUS line."""
        source = self.sources[0]
        state = source.state
        if state is CameraState.WAITING:
            return f"{self.camera} waiting for {source.device}"
        if state is CameraState.LOST:
            return f"{self.camera} lost {source.device}, retrying"
        if state in (CameraState.ENDED, CameraState.STARTING):
            return f"{self.camera} {state.value}"
        return f"{self.camera} {self.stats.fps:.1f} fps {self.stats.label or '-'}"
