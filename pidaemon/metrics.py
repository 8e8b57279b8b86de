"""Prometheus metrics and a health check over HTTP, for Prometheus/Grafana monitoring.

`GET /metrics` serves a private registry (nothing else in the process leaks into it) in the text
format; `GET /healthz` answers 200 while the service is healthy, the same liveness that keeps the
systemd watchdog fed, else 503. A ThreadingHTTPServer on its own thread serves both, so a slow or
stuck scraper never touches the pipeline. It listens on loopback unless metrics.listen says
otherwise: the endpoint has no authentication.

Frame counters are the stats totals of each output.interval; the latency histograms are fed
every frame; camera state and the model's engine are followed from the structured `camera` and
`model` events the pipeline logs anyway.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
    StateSetMetricFamily,
)

from pidaemon import __version__
from pidaemon.config import parse_listen
from pidaemon.errors import ConfigError
from pidaemon.eventlog import LOGGER_NAME, emit
from pidaemon.sinks import Sink

if TYPE_CHECKING:
    from pidaemon.config import Config
    from pidaemon.inference import Result
    from pidaemon.results import Counters, Stats

# From a fast x86 box (a few ms) to a Pi Zero 2 (a few hundred ms).
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0,
                   2.5)
CAMERA_STATES = ("starting", "streaming", "waiting", "lost", "ended")
# `camera` event states as camera states.
EVENT_STATES = {"opened": "streaming", "recovered": "streaming", "waiting": "waiting",
                "lost": "lost", "ended": "ended"}
COUNTERS = {"captured": "frames read from the camera or file",
            "processed": "frames the model classified",
            "dropped": "frames replaced in the queue by a newer one before inference",
            "bad_frames": "frames skipped as unreadable",
            "failed_frames": "frames on which inference failed"}


class _EventWatcher(logging.Handler):
    """Follows the camera state and the model's engine from the events the pipeline logs."""

    def __init__(self, engine: str) -> None:
        super().__init__()
        self.camera_state = "starting"
        self.engine = engine
        self.classes = ""

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, "event", None)
        fields = getattr(record, "fields", {})
        if event == "camera" and fields.get("state") in EVENT_STATES:
            self.camera_state = EVENT_STATES[fields["state"]]
        elif event == "model" and "engine" in fields:
            self.engine = str(fields["engine"])
            self.classes = str(fields.get("classes", ""))


class _Collector:
    """The values read at scrape time rather than pushed each frame."""

    def __init__(self, sink: MetricsSink) -> None:
        self.sink = sink

    def collect(self) -> Iterator[Metric]:
        sink = self.sink
        counters = sink.counters
        for name, doc in COUNTERS.items():
            metric = "frames_" + name.removesuffix("_frames")
            yield CounterMetricFamily(f"pi_infer_{metric}", f"Frames since start: {doc}.",
                                      value=getattr(counters, name) if counters else 0)
        state = sink.events.camera_state
        yield StateSetMetricFamily("pi_infer_camera_state", "Camera state.",
                                   {s: s == state for s in CAMERA_STATES})
        yield InfoMetricFamily("pi_infer_model", "The model and how it runs.",
                               value={"model": sink.model, "engine": sink.events.engine,
                                      "classes": sink.events.classes, "version": __version__})
        yield GaugeMetricFamily("pi_infer_last_prediction_timestamp_seconds",
                                "Unix time of the latest prediction; 0 before the first.",
                                value=sink.last_prediction)
        yield GaugeMetricFamily("pi_infer_healthy", "1 while every pipeline thread makes "
                                "progress (what /healthz and the watchdog report).",
                                value=1.0 if sink.healthy() else 0.0)


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a hung client must not keep the process alive

    def __init__(self, address: tuple[str, int], sink: MetricsSink) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.sink = sink
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        path = self.path.partition("?")[0]
        if path == "/metrics":
            self._reply(200, generate_latest(self.server.sink.registry), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            healthy = self.server.sink.healthy()
            self._reply(200 if healthy else 503, b"ok\n" if healthy else b"unhealthy\n")
        else:
            self._reply(404, b"not found; try /metrics or /healthz\n")

    def _reply(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Silent: a scrape every few seconds would bury the journal."""


class MetricsSink(Sink):
    def __init__(self, config: Config, healthy: Callable[[], bool]) -> None:
        self.listen = config.metrics.listen
        self.model = config.model.name
        self.healthy = healthy
        self.counters: Counters | None = None
        self.last_prediction = 0.0
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.registry.register(_Collector(self))
        self.inference_latency = Histogram(
            "pi_infer_inference_latency_seconds", "Time the model took per frame.",
            buckets=LATENCY_BUCKETS, registry=self.registry)
        self.result_latency = Histogram(
            "pi_infer_capture_to_result_latency_seconds", "From the frame's arrival to its "
            "result: queue wait plus inference.", buckets=LATENCY_BUCKETS, registry=self.registry)
        # Attached now, not in start(): the model event comes before the sinks start.
        self.events = _EventWatcher(config.inference.engine)
        logging.getLogger(LOGGER_NAME).addHandler(self.events)
        self._server: _Server | None = None

    def start(self) -> None:
        try:
            self._server = _Server(parse_listen(self.listen), self)
        except OSError as exc:
            raise ConfigError(f"metrics.listen: cannot listen on {self.listen}: "
                              f"{exc.strerror or exc}") from None
        host, port = self._server.server_address[:2]
        url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
        threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True).start()
        emit("metrics", f"metrics: serving {url}/metrics and {url}/healthz", url=url, port=port)

    def stop(self) -> None:
        logging.getLogger(LOGGER_NAME).removeHandler(self.events)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def on_result(self, result: Result, labels: list[str]) -> None:
        self.inference_latency.observe(result.inference_ms / 1000)
        self.result_latency.observe(result.finished_at - result.captured_at)
        self.last_prediction = time.time()

    def on_stats(self, stats: Stats, status: str) -> None:
        self.counters = stats.counters
