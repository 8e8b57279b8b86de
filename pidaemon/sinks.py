"""Optional outputs beside the log (MQTT, Prometheus metrics): the hooks the service calls.

A sink must never slow the pipeline: its hooks run on the results thread and must only hand
work to the sink's own thread or update counters.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pidaemon.config import Config
    from pidaemon.inference import Result
    from pidaemon.results import Stats


class Sink:
    """Base class: every hook is optional."""

    def start(self) -> None:
        """Open connections or listening sockets; called before READY."""

    def stop(self) -> None:
        """Flush and close; called at shutdown."""

    def on_result(self, result: Result, labels: list[str]) -> None:
        """One processed frame."""

    def on_stats(self, stats: Stats, status: str) -> None:
        """Once per output.interval, with the text systemd shows as STATUS."""


def build_sinks(config: Config, healthy: Callable[[], bool]) -> list[Sink]:
    """The sinks the config enables; `healthy` reports the same liveness as the watchdog.

    Each is imported only when enabled, so its library stays an optional extra.
    """
    sinks: list[Sink] = []
    if config.mqtt.host is not None:
        from pidaemon.mqtt import MqttSink

        sinks.append(MqttSink(config.mqtt))
    if config.metrics.enabled:
        from pidaemon.metrics import MetricsSink

        sinks.append(MetricsSink(config, healthy))
    return sinks
