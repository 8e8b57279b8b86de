"""Outputs: the log, MQTT, Prometheus metrics, the live page and collect:, each a Sink fed
results and snapshots."""

from __future__ import annotations

from pidaemon.config import Config
from pidaemon.outputs.log import LogSink
from pidaemon.pipeline.sink import Sink, StateView
from pidaemon.web.pool import ServerPool


def build_sinks(config: Config, view: StateView) -> list[Sink]:
    """The sinks the config enables; `view` answers what an output asks between results.

    Each optional one is imported only when enabled, so its library stays an optional extra.
    """
    sinks: list[Sink] = [LogSink(config.output)]
    servers = ServerPool()  # metrics and the page share a server when they share an address
    if config.mqtt.host is not None:
        from pidaemon.outputs.mqtt import MqttSink

        sinks.append(MqttSink(config.mqtt))
    if config.metrics.enabled:
        from pidaemon.outputs.metrics import MetricsSink

        sinks.append(MetricsSink(config, view, servers))
    if config.web.enabled:
        from pidaemon.outputs.live import LiveSink

        sinks.append(LiveSink(config, view, servers))
    if config.collect.directory is not None:
        from pidaemon.outputs.collect import CollectSink

        sinks.append(CollectSink(config.collect))
    return sinks
