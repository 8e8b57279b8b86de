"""The live page: what the camera sees and what the model thinks of it, from any browser.

  /             the page (its /app.js and /app.css): the frame, top-k, fps and latency graphs
                over the last minutes, camera state, model, engine, uptime and counters
  /stream.mjpg  the frames as MJPEG, at most web.max_fps, the top-k drawn on them
  /snapshot.jpg the newest frame, the same way
  /api/status   the JSON the MQTT status topic carries
  /api/live     what the page polls: that status plus the top-k, the graphs and the facts

Served by the daemon's bounded HTTP server (shared with /metrics when both name one address).
The results thread only stores references here; frames are encoded on the page's own thread and
only while someone watches. Behind web.password_file every path needs the password; a request
without it gets 401 and a (throttled) log line, never a frame. Nothing here changes the daemon.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from typing import TYPE_CHECKING

from pidaemon.config.credentials import CredentialError, read_secret
from pidaemon.errors import ConfigError
from pidaemon.eventlog import emit
from pidaemon.pipeline.sink import Sink, StateView
from pidaemon.sources import CameraState
from pidaemon.web.auth import Credential, unauthorized
from pidaemon.web.http import Request, Response, Stream
from pidaemon.web.jpeg import Box
from pidaemon.web.mjpeg import FrameStreamer
from pidaemon.web.page import CSS, INDEX, JS, SECURITY_HEADERS
from pidaemon.web.pool import ServerPool
from pidaemon.web.server import Handler, HttpServer
from pidaemon.web.throttle import Throttled

if TYPE_CHECKING:
    from pidaemon.config import Config
    from pidaemon.pipeline.frames import Result
    from pidaemon.pipeline.snapshot import RegionInfo, Snapshot
    from pidaemon.pipeline.state import StateChange

HISTORY_S = 300.0  # what the graphs show
GRAPH_POINTS = 300  # at most, whatever output.interval is
MIN_INTERVAL = 0.1  # output.interval's minimum
NO_STORE = {"Cache-Control": "no-store"}


class LiveSink(Sink):
    def __init__(self, config: Config, view: StateView, servers: ServerPool | None = None) -> None:
        web = config.web
        self.listen = web.listen
        self.max_clients = web.max_clients
        self.view = view
        self.servers = servers or ServerPool()
        self.credential: Credential | None = None
        if web.password_file is not None:
            try:
                self.credential = Credential(web.username, read_secret(web.password_file))
            except CredentialError as exc:
                raise ConfigError(f"web.password_file: {exc}") from None
        self.frames = FrameStreamer(view.tap, web.max_fps, self._caption, SECURITY_HEADERS)
        self.started_at = time.monotonic()
        self._latest: tuple[Result, list[str]] | None = None
        self._regions: tuple[RegionInfo, ...] = ()
        self._states: dict[str, str] = {}  # region name -> its steady state
        self._fps = 0.0
        # Room for HISTORY_S at the shortest output.interval, which a reload may set.
        self._history: deque[tuple[float, float, float | None, float | None]] = deque(
            maxlen=int(HISTORY_S / MIN_INTERVAL) + 1)
        self._log = Throttled()
        self._server: HttpServer | None = None

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        server = self.servers.acquire(self.listen, "web.listen", max_streams=self.max_clients)
        routes: dict[str, Handler] = {
            "/": lambda r: self._asset(INDEX, "text/html; charset=utf-8"),
            "/app.js": lambda r: self._asset(JS, "text/javascript; charset=utf-8"),
            "/app.css": lambda r: self._asset(CSS, "text/css; charset=utf-8"),
            "/stream.mjpg": lambda r: self.frames.mjpeg(),
            "/snapshot.jpg": self._snapshot,
            "/api/status": self._status,
            "/api/live": self._live,
        }
        for path, handler in routes.items():
            server.route(path, self._guarded(handler))
        self._server = server
        self.frames.start()
        url = server.url
        emit("web", f"web: serving the live page at {url}/ (at most {self.max_clients} viewers"
             f"{', password required' if self.credential else ''})", url=url, port=server.port)

    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        return self._server.port

    def stop(self) -> None:
        self.frames.stop()
        if self._server is not None:
            self.servers.release(self._server)
            self._server = None

    # -- hooks (results thread): keep references only -----------------------------------------
    def on_result(self, result: Result, labels: list[str]) -> None:
        self._latest = (result, labels)

    def on_regions(self, regions: tuple[RegionInfo, ...]) -> None:
        self._regions = regions
        self._states = {r.name: self._states.get(r.name, "unknown") for r in regions}

    def on_state(self, change: StateChange) -> None:
        self._states = {**self._states, change.region: change.state}

    def on_stats(self, snapshot: Snapshot) -> None:
        stats = snapshot.stats
        self._fps = stats.fps
        self._history.append((time.monotonic(), stats.fps, stats.latency_p50_ms,
                              stats.latency_p95_ms))

    # -- what is served (server thread: quick) ------------------------------------------------
    def _guarded(self, handler: Handler) -> Handler:
        def guarded(request: Request) -> Response | Stream:
            if self.credential is not None and not self.credential.allows(request):
                why = "wrong" if "authorization" in request.headers else "no"
                self._log("auth", f"refused {request.client[0]} {request.path}: {why} "
                          f"credentials (web.password_file)",
                          logging.WARNING if why == "wrong" else logging.INFO)
                return unauthorized()
            return handler(request)
        return guarded

    @staticmethod
    def _asset(text: str, content_type: str) -> Response:
        return Response(200, text.encode(), content_type, {**SECURITY_HEADERS, **NO_STORE})

    @staticmethod
    def _json(payload: object, status: int = 200) -> Response:
        return Response(status, json.dumps(payload).encode(), "application/json",
                        {**SECURITY_HEADERS, **NO_STORE})

    def _snapshot(self, request: Request) -> Response | Stream:
        snapshot = self.view.snapshot()
        if snapshot is None or snapshot.sources[0].state is not CameraState.STREAMING:
            why = snapshot.sources[0].status if snapshot else "the model is still loading"
            return Response(503, f"no frame: {why}\n".encode(),
                            headers={**SECURITY_HEADERS, "Retry-After": "2"})
        return self.frames.snapshot()

    def _status(self, request: Request) -> Response:
        snapshot = self.view.snapshot()
        if snapshot is None:
            return self._json({"status": "loading the model"}, 503)
        return self._json({"time": round(time.time(), 3), **snapshot.status_fields()})

    def _live(self, request: Request) -> Response:
        snapshot = self.view.snapshot()
        if snapshot is None:
            return self._json({"status": "loading the model"}, 503)
        source = snapshot.sources[0]
        return self._json({
            "status": {"time": round(time.time(), 3), **snapshot.status_fields()},
            "top": self._top(),
            "camera": {"device": source.device, "state": source.state.value,
                       "status": source.status},
            "model": snapshot.model.description, "engine": snapshot.model.engine,
            "uptime_s": round(time.monotonic() - self.started_at, 1),
            "history": self._graphs(),
            "regions": [{"name": r.name, "box": r.box, "state": self._states.get(r.name)}
                        for r in self._regions],
            "viewers": self.frames.viewers, "encoded_frames": self.frames.encoded})

    def _top(self) -> list[tuple[str, float]]:
        latest = self._latest
        if latest is None:
            return []
        result, labels = latest
        return [(labels[c], round(s, 4)) for c, s in zip(result.classes, result.scores,
                                                         strict=False)]

    def _graphs(self) -> dict[str, list]:
        """The last HISTORY_S seconds, at most GRAPH_POINTS points: seconds ago and values."""
        now = time.monotonic()
        points = [p for p in list(self._history) if now - p[0] <= HISTORY_S]
        points = points[::max(1, -(-len(points) // GRAPH_POINTS))]
        return {"ago": [round(now - p[0], 1) for p in points],
                "fps": [round(p[1], 2) for p in points],
                "p50": [None if p[2] is None else round(p[2], 1) for p in points],
                "p95": [None if p[3] is None else round(p[3], 1) for p in points]}

    # -- drawn on the frames (page thread) ----------------------------------------------------
    def _caption(self) -> tuple[list[str], str, list[Box]]:
        states = self._states
        boxes = [(r.box, f"{r.name}: {states.get(r.name, 'unknown')}") for r in self._regions]
        if boxes:  # each region's state is on its box; the whole-frame top-k would mislead
            return [], f"{self._fps:.1f} fps", boxes
        lines = [f"{label} {score:.2f}" for label, score in self._top()]
        return lines, f"{self._fps:.1f} fps", []
