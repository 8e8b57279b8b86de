"""Prometheus metrics and a health check over HTTP, for Prometheus/Grafana monitoring.

`GET /metrics` serves a private registry (nothing else in the process leaks into it) in the text
format. `GET /healthz` answers 200 "ok" while frames flow: every thread makes progress (the
liveness that keeps the systemd watchdog fed) and the camera is streaming. A camera that is
missing, lost or still opening gives 503 "waiting: <why>", a stuck thread 503 "unhealthy". The
watchdog itself only needs liveness: restarting the daemon would not plug a camera in.

The daemon's bounded HTTP server serves both on its own thread, so a slow, stuck or hostile
client never touches the pipeline. It listens on loopback unless metrics.listen says otherwise:
the endpoint has no authentication.

Counters, camera state and the model are read from the pipeline's snapshot at scrape time; the
latency histograms are fed every frame.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
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
from pidaemon.eventlog import emit
from pidaemon.pipeline.sink import Sink, StateView
from pidaemon.sources import CameraState
from pidaemon.web.http import Request, Response
from pidaemon.web.pool import ServerPool
from pidaemon.web.server import HttpServer

if TYPE_CHECKING:
    from pidaemon.config import Config
    from pidaemon.pipeline.frames import Result
    from pidaemon.pipeline.snapshot import RegionInfo, Snapshot
    from pidaemon.pipeline.state import StateChange

# From a fast x86 box (a few ms) to a Pi Zero 2 (a few hundred ms).
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0,
                   2.5)
COUNTERS = {"captured": "frames read from the camera or file",
            "processed": "frames the model classified",
            "dropped": "frames replaced in the queue by a newer one before inference",
            "bad_frames": "frames skipped as unreadable",
            "failed_frames": "frames on which inference failed"}


# Source states in which no frame flows yet or any more (ENDED: the daemon is stopping).
NO_FRAMES = (CameraState.STARTING, CameraState.WAITING, CameraState.LOST)


class _Collector:
    """The values read at scrape time rather than pushed each frame."""

    def __init__(self, sink: MetricsSink) -> None:
        self.sink = sink

    def collect(self) -> Iterator[Metric]:
        sink = self.sink
        snapshot = sink.view.snapshot()
        if snapshot is not None and snapshot.cameras:
            yield from self._cameras(snapshot.cameras)
        else:
            counters = snapshot.stats.counters if snapshot else None
            for name, doc in COUNTERS.items():
                metric = "frames_" + name.removesuffix("_frames")
                yield CounterMetricFamily(f"pi_infer_{metric}", f"Frames since start: {doc}.",
                                          value=getattr(counters, name) if counters else 0)
            state = snapshot.sources[0].state if snapshot else CameraState.STARTING
            yield StateSetMetricFamily("pi_infer_camera_state", "Camera state.",
                                       {s.value: s is state for s in CameraState})
        engine = snapshot.model.engine if snapshot else sink.engine
        classes = str(len(snapshot.model.labels)) if snapshot else ""
        yield InfoMetricFamily("pi_infer_model", "The model and how it runs.",
                               value={"model": sink.model, "engine": engine,
                                      "classes": classes, "version": __version__})
        yield GaugeMetricFamily("pi_infer_last_prediction_timestamp_seconds",
                                "Unix time of the latest prediction; 0 before the first.",
                                value=sink.last_prediction)
        yield GaugeMetricFamily("pi_infer_healthy", "1 while every pipeline thread makes "
                                "progress (what the watchdog checks; /healthz also needs the "
                                "camera streaming).",
                                value=1.0 if sink.view.healthy() else 0.0)
        yield from self._regions()

    @staticmethod
    def _cameras(cameras: tuple[Snapshot, ...]) -> Iterator[Metric]:
        """With `cameras:`, the same series with a `camera` label."""
        for name, doc in COUNTERS.items():
            metric = "frames_" + name.removesuffix("_frames")
            family = CounterMetricFamily(f"pi_infer_{metric}", f"Frames since start: {doc}.",
                                         labels=["camera"])
            for part in cameras:
                family.add_metric([part.camera], getattr(part.stats.counters, name))
            yield family
        states = StateSetMetricFamily("pi_infer_camera_state", "Camera state.",
                                      labels=["camera"])
        for part in cameras:
            state = part.sources[0].state
            states.add_metric([part.camera], {s.value: s is state for s in CameraState})
        yield states

    def _regions(self) -> Iterator[Metric]:
        states = dict(self.sink.states)
        if not states:
            return
        state = GaugeMetricFamily("pi_infer_region_state", "1 for each region's current "
                                  "steady state (one series per region).",
                                  labels=["region", "state"])
        score = GaugeMetricFamily("pi_infer_region_state_score", "The top-1 score of the "
                                  "result that made the current state.", labels=["region"])
        since = GaugeMetricFamily("pi_infer_region_state_since_timestamp_seconds", "Unix time "
                                  "of the region's last state change; 0 before the first.",
                                  labels=["region"])
        changes = CounterMetricFamily("pi_infer_region_state_changes", "State changes of the "
                                      "region since start.", labels=["region"])
        for name, (change, count) in states.items():
            state.add_metric([name, change.state if change else "unknown"], 1.0)
            score.add_metric([name], change.score if change else 0.0)
            since.add_metric([name], change.since if change else 0.0)
            changes.add_metric([name], count)
        yield from (state, score, since, changes)


class MetricsSink(Sink):
    def __init__(self, config: Config, view: StateView,
                 servers: ServerPool | None = None) -> None:
        self.servers = servers or ServerPool()  # shared with the live page on the same address
        self.listen = config.metrics.listen
        self.model = config.model.name
        self.engine = config.inference.engine  # until the model is loaded
        self.view = view
        self.last_prediction = 0.0
        # region -> its latest change (None before the first) and the number of changes
        self.states: dict[str, tuple[StateChange | None, int]] = {}
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.registry.register(_Collector(self))
        self.labelled = bool(config.cameras)  # with `cameras:`, one series per camera
        labels = ["camera"] if self.labelled else []
        self.inference_latency = Histogram(
            "pi_infer_inference_latency_seconds", "Time the model took per frame.",
            labels, buckets=LATENCY_BUCKETS, registry=self.registry)
        self.result_latency = Histogram(
            "pi_infer_capture_to_result_latency_seconds", "From the frame's arrival to its "
            "result: queue wait plus inference.", labels, buckets=LATENCY_BUCKETS,
            registry=self.registry)
        self._server: HttpServer | None = None

    def start(self) -> None:
        server = self.servers.acquire(self.listen, "metrics.listen")
        server.route("/metrics", self._metrics)
        server.route("/healthz", self._healthz)
        self._server = server
        url = server.url
        emit("metrics", f"metrics: serving {url}/metrics and {url}/healthz", url=url,
             port=server.port)

    def stop(self) -> None:
        if self._server is not None:
            self.servers.release(self._server)
            self._server = None

    def _metrics(self, request: Request) -> Response:
        return Response(200, generate_latest(self.registry), CONTENT_TYPE_LATEST)

    def _healthz(self, request: Request) -> Response:
        if not self.view.healthy():
            return Response(503, b"unhealthy\n")
        snapshot = self.view.snapshot()
        waiting = [s.status for s in snapshot.sources if s.state in NO_FRAMES] if snapshot else []
        if waiting:
            return Response(503, f"waiting: {'; '.join(waiting)}\n".encode())
        return Response(200, b"ok\n")

    def on_result(self, result: Result, labels: list[str]) -> None:
        inference, latency = self.inference_latency, self.result_latency
        if self.labelled:
            inference = inference.labels(result.camera or "")
            latency = latency.labels(result.camera or "")
        inference.observe(result.inference_ms / 1000)
        latency.observe(result.latency_ms / 1000)
        self.last_prediction = time.time()

    def on_regions(self, regions: tuple[RegionInfo, ...]) -> None:
        self.states = {r.topic: self.states.get(r.topic, (None, 0)) for r in regions}

    def on_state(self, change: StateChange) -> None:
        key = change.topic  # `gate`, or `garden/gate` with cameras
        if key not in self.states:  # removed by a reload meanwhile
            return
        count = self.states[key][1]
        self.states = {**self.states, key: (change, count + 1)}
