"""Cameras that are missing, vanish, stall or come back: the daemon keeps running, says what
happened once per change of state, and streams again by itself."""

import shutil
import signal
import time

from .conftest import base_config, write_config
from .labels import describe


def camera_states(daemon) -> list[str]:
    return [e["state"] for e in daemon.of("camera")]


def test_missing_device_does_not_hold_back_ready(tmp_path, cache_dir, start_daemon):
    config = write_config(tmp_path / "c.yaml", base_config(cache_dir))
    daemon = start_daemon("--config", str(config), "--source", "/dev/video-pi-infer-absent")
    waiting = daemon.wait_for(lambda e: e["event"] == "camera")
    assert waiting["state"] == "waiting" and waiting["level"] == "warning"
    assert "/dev/video-pi-infer-absent does not exist" in waiting["message"]
    ready = daemon.wait_for(lambda e: e["event"] == "lifecycle" and "ready" in e["message"])
    assert "waiting for camera" in ready["message"]
    time.sleep(3)  # several retries
    assert camera_states(daemon) == ["waiting"], "one line per state change, not per retry"
    daemon.signal(signal.SIGTERM)
    assert daemon.finish(timeout=3) == 0


def test_file_appearing_later_starts_streaming(tmp_path, cache_dir, photo_video, start_daemon):
    late = tmp_path / "late.avi"
    config = write_config(tmp_path / "c.yaml", base_config(cache_dir, camera={"loop": True}))
    daemon = start_daemon("--config", str(config), "--source", str(late))
    daemon.wait_for(lambda e: e["event"] == "camera" and e["state"] == "waiting")
    shutil.copy(photo_video, late)
    recovered = daemon.wait_for(lambda e: e["event"] == "camera" and e["state"] != "waiting",
                                timeout=20)
    assert recovered["state"] == "recovered" and "after" in recovered["message"]
    daemon.wait_for(lambda e: e["event"] == "stats" and e["processed"] > 0)
    daemon.signal(signal.SIGTERM)
    assert daemon.finish() == 0


def test_looping_file_that_vanishes_and_returns(tmp_path, cache_dir, start_daemon):
    from .conftest import write_video

    clip = write_video(tmp_path / "short.avi", ["bird.bmp"], 0.5)
    kept = tmp_path / "kept.avi"
    shutil.copy(clip, kept)
    config = write_config(tmp_path / "c.yaml", base_config(cache_dir, camera={"loop": True}))
    daemon = start_daemon("--config", str(config), "--source", str(clip))
    daemon.wait_for(lambda e: e["event"] == "stats" and e["processed"] > 0)
    clip.unlink()
    lost = daemon.wait_for(lambda e: e["event"] == "camera" and e["state"] == "lost")
    assert "does not exist" in lost["message"] and "retrying" in lost["message"]
    time.sleep(2)
    shutil.copy(kept, clip)
    daemon.wait_for(lambda e: e["event"] == "camera" and e["state"] == "recovered", timeout=20)
    processed = daemon.of("stats")[-1]["processed"]
    daemon.wait_for(lambda e: e["event"] == "stats" and e["processed"] > processed)
    assert camera_states(daemon) == ["opened", "lost", "recovered"]
    daemon.signal(signal.SIGTERM)
    assert daemon.finish() == 0


def test_network_camera_unplugged_and_back(tmp_path, cache_dir, mjpeg_camera, start_daemon):
    mjpeg_camera.plug_in()
    config = write_config(tmp_path / "c.yaml", base_config(
        cache_dir, camera={"stall_timeout": 1.0}, output={"every_frame": True}))
    daemon = start_daemon("--config", str(config), "--source", mjpeg_camera.url)
    first = daemon.wait_for(lambda e: e["event"] == "prediction")
    assert first["labels"][0] == "espresso", describe(first)
    mjpeg_camera.unplug()
    lost = daemon.wait_for(lambda e: e["event"] == "camera" and e["state"] == "lost")
    assert lost["level"] == "warning"
    time.sleep(3)
    assert camera_states(daemon) == ["opened", "lost"], "retries are silent"
    mjpeg_camera.plug_in()
    recovered = daemon.wait_for(lambda e: e["event"] == "camera" and e["state"] == "recovered",
                                timeout=30)
    assert "after" in recovered["message"]
    seq = max(e["seq"] for e in daemon.of("prediction"))
    daemon.wait_for(lambda e: e["event"] == "prediction" and e["seq"] > seq)
    assert daemon.proc.poll() is None
    daemon.signal(signal.SIGTERM)
    assert daemon.finish() == 0


def test_stalled_camera_is_reopened(tmp_path, cache_dir, mjpeg_camera, start_daemon):
    mjpeg_camera.plug_in()
    config = write_config(tmp_path / "c.yaml", base_config(cache_dir, camera={
        "stall_timeout": 2.0}))
    daemon = start_daemon("--config", str(config), "--source", mjpeg_camera.url)
    daemon.wait_for(lambda e: e["event"] == "stats" and e["processed"] > 0)
    mjpeg_camera.streaming.clear()  # connection open, no frames
    lost = daemon.wait_for(lambda e: e["event"] == "camera" and e["state"] == "lost")
    assert "no frame for 2 s" in lost["message"]
    mjpeg_camera.streaming.set()
    daemon.wait_for(lambda e: e["event"] == "camera" and e["state"] == "recovered", timeout=30)
    processed = daemon.of("stats")[-1]["processed"]
    daemon.wait_for(lambda e: e["event"] == "stats" and e["processed"] > processed)
    daemon.signal(signal.SIGTERM)
    assert daemon.finish() == 0


def test_corrupt_video_file_is_reported_not_crashed(tmp_path, cache_dir, start_daemon):
    corrupt = tmp_path / "corrupt.avi"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00AVI garbage" * 100)
    config = write_config(tmp_path / "c.yaml", base_config(cache_dir))
    daemon = start_daemon("--config", str(config), "--source", str(corrupt))
    waiting = daemon.wait_for(lambda e: e["event"] == "camera")
    assert waiting["state"] == "waiting" and "cannot decode" in waiting["message"]
    daemon.signal(signal.SIGTERM)
    assert daemon.finish(timeout=3) == 0
