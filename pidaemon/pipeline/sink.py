"""What the pipeline calls on its outputs (sinks), on its results thread.

A sink must never slow the pipeline: its hooks must only hand work to the sink's own thread or
update its own state. Everything a sink shows comes from the Result and Snapshot it is handed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from pidaemon.config import Config
    from pidaemon.pipeline.frames import Result
    from pidaemon.pipeline.snapshot import RegionInfo, Snapshot
    from pidaemon.pipeline.state import StateChange
    from pidaemon.pipeline.tap import FrameTap


class StateView(Protocol):
    """What an output may ask of the running service at any time (a scrape, a page load)."""

    tap: FrameTap  # the camera's newest image, kept while an output watches

    def snapshot(self) -> Snapshot | None:
        """The pipeline's state now; None while the model is still loading."""

    def healthy(self) -> bool:
        """Every pipeline thread made progress within its window (what the watchdog sees)."""


class Sink:
    """Base class: every hook is optional."""

    def start(self) -> None:
        """Open connections or listening sockets; called before READY (may raise ConfigError)."""

    def stop(self) -> None:
        """Flush and close; called at shutdown."""

    def on_result(self, result: Result, labels: list[str]) -> None:
        """One processed frame."""

    def on_stats(self, snapshot: Snapshot) -> None:
        """Once per output.interval: the pipeline's state, with the window's stats."""

    def on_regions(self, regions: tuple[RegionInfo, ...]) -> None:
        """The configured regions, at start and after a reload (none: the whole frame)."""

    def on_state(self, change: StateChange) -> None:
        """A region's steady state changed."""

    def reconfigure(self, config: Config) -> None:
        """A reload's new configuration (keys declared `applied live` only)."""
