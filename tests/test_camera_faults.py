"""Cameras that are missing, vanish, stall or come back: the daemon keeps running, says what
happened once per change of state, and streams again by itself.

The daemon runs in-process with its real sources; each source is watched (its opens counted)
so that a test waits for the retries it talks about instead of sleeping through them. The
retry backoff is the real one: 0.5 s, then 1 s, 2 s, ... up to 10 s.
"""

from __future__ import annotations

import shutil
from typing import Any

from pidaemon.config import CameraConfig
from pidaemon.sources import FrameSource, make_source

from .conftest import base_config, write_config, write_video
from .fakes import wait_until
from .labels import describe


class Watched(FrameSource):
    """The real source for a camera config, with its open() attempts and failures counted."""

    def __init__(self, inner: FrameSource) -> None:
        super().__init__(inner.device)
        self.inner = inner
        self.live, self.negotiates = inner.live, inner.negotiates
        self.open_patience = inner.open_patience
        self.attempts = 0
        self.failures = 0

    def open(self) -> None:
        self.attempts += 1
        try:
            self.inner.open()
        except OSError:
            self.failures += 1
            raise
        self.grant = self.inner.grant

    def read(self) -> tuple[bool, Any]:
        return self.inner.read()

    def release(self) -> None:
        self.inner.release()

    def gone(self) -> str | None:
        return self.inner.gone()


def watching(made: list[Watched]):
    """A `make_source` for Service that keeps the sources it makes in `made`."""
    def make(camera: CameraConfig) -> FrameSource:
        made.append(Watched(make_source(camera)))
        return made[-1]
    return make


def camera_states(daemon) -> list[str]:
    return [e["state"] for e in daemon.of("camera")]


def is_camera(state: str):
    return lambda e: e["event"] == "camera" and e["state"] == state


def test_missing_device_does_not_hold_back_ready(tmp_path, cache_dir, start_service):
    config = write_config(tmp_path / "c.yaml", base_config(cache_dir))
    sources: list[Watched] = []
    daemon = start_service("--config", str(config), "--source", "/dev/video-pi-infer-absent",
                           make_source=watching(sources))
    waiting = daemon.wait_for(lambda e: e["event"] == "camera")
    assert waiting["state"] == "waiting" and waiting["level"] == "warning"
    assert "/dev/video-pi-infer-absent does not exist" in waiting["message"]
    ready = daemon.wait_for(lambda e: e["event"] == "lifecycle" and "ready" in e["message"])
    assert "waiting for camera" in ready["message"]
    wait_until(lambda: sources[0].failures >= 3, timeout=10)  # the first try and two retries
    daemon.stop()  # the capture thread handles the last failure before it sees the stop
    assert daemon.finish(timeout=3) == 0
    assert camera_states(daemon) == ["waiting"], "one line per state change, not per retry"


def test_file_appearing_later_starts_streaming(tmp_path, cache_dir, photo_video, start_service):
    late = tmp_path / "late.avi"
    config = write_config(tmp_path / "c.yaml", base_config(cache_dir, camera={"loop": True}))
    daemon = start_service("--config", str(config), "--source", str(late))
    daemon.wait_for(is_camera("waiting"))
    shutil.copy(photo_video, late)
    recovered = daemon.wait_for(lambda e: e["event"] == "camera" and e["state"] != "waiting",
                                timeout=20)
    assert recovered["state"] == "recovered" and "after" in recovered["message"]
    daemon.wait_for(lambda e: e["event"] == "stats" and e["processed"] > 0)
    daemon.stop()
    assert daemon.finish() == 0


def test_looping_file_that_vanishes_and_returns(tmp_path, cache_dir, start_service):
    clip = write_video(tmp_path / "short.avi", ["bird.bmp"], 0.5)
    kept = tmp_path / "kept.avi"
    shutil.copy(clip, kept)
    config = write_config(tmp_path / "c.yaml", base_config(cache_dir, camera={"loop": True}))
    sources: list[Watched] = []
    daemon = start_service("--config", str(config), "--source", str(clip),
                           make_source=watching(sources))
    daemon.wait_for(lambda e: e["event"] == "stats" and e["processed"] > 0)
    clip.unlink()
    lost = daemon.wait_for(is_camera("lost"))
    assert "does not exist" in lost["message"] and "retrying" in lost["message"]
    failed = sources[0].failures  # the reopen at the end of the clip
    wait_until(lambda: sources[0].failures > failed, timeout=10)  # and a retry, while it is away
    shutil.copy(kept, clip)
    daemon.wait_for(is_camera("recovered"), timeout=20)
    processed = daemon.of("stats")[-1]["processed"]
    daemon.wait_for(lambda e: e["event"] == "stats" and e["processed"] > processed)
    assert camera_states(daemon) == ["opened", "lost", "recovered"]
    daemon.stop()
    assert daemon.finish() == 0


def test_network_camera_unplugged_and_back(tmp_path, cache_dir, mjpeg_camera, start_service):
    mjpeg_camera.plug_in()
    config = write_config(tmp_path / "c.yaml", base_config(
        cache_dir, camera={"stall_timeout": 1.0}, output={"every_frame": True}))
    sources: list[Watched] = []
    daemon = start_service("--config", str(config), "--source", mjpeg_camera.url,
                           make_source=watching(sources))
    first = daemon.wait_for(lambda e: e["event"] == "prediction")
    assert first["labels"][0] == "espresso", describe(first)
    mjpeg_camera.unplug()
    lost = daemon.wait_for(is_camera("lost"))
    assert lost["level"] == "warning"
    failed = sources[0].failures
    wait_until(lambda: sources[0].failures >= failed + 2, timeout=10)  # two retries, offline
    mjpeg_camera.plug_in()
    recovered = daemon.wait_for(is_camera("recovered"), timeout=30)
    assert "after" in recovered["message"]
    # The capture thread handles each failed retry before it tries again.
    assert camera_states(daemon) == ["opened", "lost", "recovered"], "retries are silent"
    seq = max(e["seq"] for e in daemon.of("prediction"))
    daemon.wait_for(lambda e: e["event"] == "prediction" and e["seq"] > seq)
    assert daemon.running
    daemon.stop()
    assert daemon.finish() == 0


def test_stalled_camera_is_reopened(tmp_path, cache_dir, mjpeg_camera, start_service):
    mjpeg_camera.plug_in()
    config = write_config(tmp_path / "c.yaml", base_config(cache_dir, camera={
        "stall_timeout": 1.0}))
    daemon = start_service("--config", str(config), "--source", mjpeg_camera.url)
    daemon.wait_for(lambda e: e["event"] == "stats" and e["processed"] > 0)
    mjpeg_camera.streaming.clear()  # connection open, no frames
    lost = daemon.wait_for(is_camera("lost"))
    assert "no frame for 1 s" in lost["message"]
    mjpeg_camera.streaming.set()
    daemon.wait_for(is_camera("recovered"), timeout=30)
    processed = daemon.of("stats")[-1]["processed"]
    daemon.wait_for(lambda e: e["event"] == "stats" and e["processed"] > processed)
    daemon.stop()
    assert daemon.finish() == 0


def test_corrupt_video_file_is_reported_not_crashed(tmp_path, cache_dir, start_service):
    corrupt = tmp_path / "corrupt.avi"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00AVI garbage" * 100)
    config = write_config(tmp_path / "c.yaml", base_config(cache_dir))
    daemon = start_service("--config", str(config), "--source", str(corrupt))
    waiting = daemon.wait_for(lambda e: e["event"] == "camera")
    assert waiting["state"] == "waiting" and "cannot decode" in waiting["message"]
    daemon.stop()
    assert daemon.finish(timeout=3) == 0
