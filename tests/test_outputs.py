"""Each output fed a Result or a Snapshot in-process: the log lines, the metrics endpoint and
systemd's STATUS, all from the state they are handed."""

from __future__ import annotations

import io
import json
import os

import pytest

from pidaemon.bench.notify_listener import NotifyListener
from pidaemon.config import Config, MetricsConfig, OutputConfig
from pidaemon.eventlog import configure
from pidaemon.outputs.log import LogSink
from pidaemon.outputs.status import StatusSink
from pidaemon.pipeline import Counters, Result, Snapshot, Stats
from pidaemon.pipeline.snapshot import ModelInfo, SourceStatus
from pidaemon.sources import CameraState, Grant
from pidaemon.systemd import Notifier

from .conftest import http_get

LABELS = ["tabby", "espresso", "chickadee"]
RESULT = Result(seq=7, captured_at=10.0, finished_at=10.025, inference_ms=20.0,
                classes=[1, 0, 2], scores=[0.9, 0.06, 0.01])


def snapshot(state: CameraState = CameraState.STREAMING) -> Snapshot:
    counters = Counters(captured=30, processed=20, dropped=9, bad_frames=1, failed_frames=0)
    stats = Stats(19.5, 25.0, 31.0, counters, "espresso", 0.9)
    status = "streaming /dev/video0: 640x480" if state is CameraState.STREAMING else \
        "camera /dev/video0 lost: no frame for 5 s; retrying"
    source = SourceStatus("/dev/video0", state, status, Grant("640x480 MJPG", {}, "V4L2"))
    return Snapshot((source,), ModelInfo("mobilenet_v2", "qnnpack", LABELS), stats, RESULT)


@pytest.fixture
def log_lines():
    stream = io.StringIO()
    configure("json", stream)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    configure("text")


def test_log_sink_writes_predictions_above_min_score_and_stats(log_lines):
    sink = LogSink(OutputConfig(every_frame=True, min_score=0.05))
    sink.on_result(RESULT, LABELS)
    sink.on_stats(snapshot())
    prediction, stats = log_lines()
    assert prediction["event"] == "prediction" and prediction["labels"] == ["espresso", "tabby"]
    assert prediction["latency_ms"] == 25.0 and prediction["seq"] == 7
    assert stats["event"] == "stats" and stats["fps"] == 19.5 and stats["dropped"] == 9
    assert stats["label"] == "espresso" and stats["message"].startswith("stats: fps=19.5")
    sink.reconfigure(Config(output=OutputConfig(every_frame=False)))
    sink.on_result(RESULT, LABELS)
    assert len(log_lines()) == 2, "every_frame off after a reload: no prediction line"


def test_status_sink_tells_systemd_the_stats_or_the_camera_problem(tmp_path, monkeypatch):
    listener = NotifyListener(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", listener.path)
    try:
        sink = StatusSink(Notifier())
        sink.on_stats(snapshot())
        sink.on_stats(snapshot(CameraState.LOST))
        listener.drain(0)  # both were sent before this returns: no waiting
        listener.wait_for("STATUS=camera", timeout=10)
    finally:
        listener.close()
    messages = [m for _, m in listener.messages]
    assert messages[0].startswith("STATUS=19.5 fps, latency 25.0 ms, dropped 9, top-1 espresso")
    assert messages[1] == "STATUS=camera /dev/video0 lost: no frame for 5 s; retrying"
    assert "NOTIFY_SOCKET" not in os.environ, "children cannot notify on our behalf"


class View:
    """What the service offers outputs: a snapshot and its liveness, set by the test."""

    def __init__(self) -> None:
        self.current: Snapshot | None = None
        self.is_healthy = False

    def snapshot(self) -> Snapshot | None:
        return self.current

    def healthy(self) -> bool:
        return self.is_healthy


def test_metrics_sink_serves_the_snapshot_it_is_shown(log_lines):
    from pidaemon.outputs.metrics import MetricsSink

    view = View()
    sink = MetricsSink(Config(metrics=MetricsConfig(enabled=True, listen="127.0.0.1:0")), view)
    sink.start()
    try:
        url = log_lines()[-1]["url"]
        status, body = http_get(f"{url}/metrics")
        assert status == 200 and 'pi_infer_camera_state{pi_infer_camera_state="starting"} 1.0' \
            in body
        assert http_get(f"{url}/healthz") == (503, "unhealthy\n")
        view.current, view.is_healthy = snapshot(CameraState.LOST), True
        sink.on_result(RESULT, LABELS)
        status, body = http_get(f"{url}/metrics")
        assert 'pi_infer_camera_state{pi_infer_camera_state="lost"} 1.0' in body
        assert "pi_infer_frames_dropped_total 9.0" in body
        assert 'engine="qnnpack"' in body and 'classes="3"' in body
        assert "pi_infer_inference_latency_seconds_count 1.0" in body
        assert http_get(f"{url}/healthz") == (
            503, "waiting: camera /dev/video0 lost: no frame for 5 s; retrying\n")
        view.current = snapshot(CameraState.STREAMING)
        assert http_get(f"{url}/healthz") == (200, "ok\n")
    finally:
        sink.stop()
