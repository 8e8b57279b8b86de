"""Signals, failures and load: clean exits within 2 s, a failing frame is skipped, a failing
model ends the daemon for systemd to restart, and the queue never grows.

The signal and memory tests need a process of their own; the failing model runs in-process."""

import signal
import time

import cv2
import numpy as np
import pytest
import torch

from .conftest import LABELS, base_config, write_config

STOP_WITHIN = 2.0


def solid_video(path, colours: list[int], fps: int = 10):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (320, 240))
    for value in colours:
        writer.write(np.full((240, 320, 3), value, np.uint8))
    writer.release()
    return path


class BrightnessAllergic(torch.nn.Module):
    """A user model that fails on bright frames, as a buggy fine-tuned model might."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool(x.mean() > 0.5):
            raise RuntimeError("frame too bright for this model")
        return torch.zeros(1, 1000)


@pytest.fixture(scope="module")
def allergic_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("allergic") / "allergic.pt"
    torch.jit.save(torch.jit.script(BrightnessAllergic()), str(path))
    return path


def stop_time(daemon, signum=signal.SIGTERM) -> tuple[int, float]:
    started = time.monotonic()
    daemon.signal(signum)
    code = daemon.finish(timeout=10)
    return code, time.monotonic() - started


@pytest.mark.system
def test_sigterm_while_the_model_is_being_built(tmp_path, photo_video, start_daemon):
    config = write_config(tmp_path / "c.yaml", base_config(tmp_path / "empty-cache"))
    daemon = start_daemon("--config", str(config), "--source", str(photo_video))
    daemon.wait_for(lambda e: e["event"] == "lifecycle" and e["message"].startswith("starting"))
    time.sleep(1.0)  # inside the cold build (it takes several seconds)
    code, took = stop_time(daemon)
    assert code == 0 and took < STOP_WITHIN
    assert any("during start-up" in e["message"] for e in daemon.of("lifecycle"))
    assert not any(e["message"].startswith("ready") for e in daemon.of("lifecycle"))


@pytest.mark.system
def test_sigterm_during_camera_backoff(tmp_path, cache_dir, start_daemon):
    config = write_config(tmp_path / "c.yaml", base_config(cache_dir))
    daemon = start_daemon("--config", str(config), "--source", "/dev/video-pi-infer-absent")
    daemon.wait_for(lambda e: e["event"] == "lifecycle" and e["message"].startswith("ready"))
    time.sleep(2.5)  # backoff has grown past the first retries
    code, took = stop_time(daemon)
    assert code == 0 and took < STOP_WITHIN


@pytest.mark.system
def test_sigint_under_full_load(tmp_path, cache_dir, photo_video, start_daemon):
    config = write_config(tmp_path / "c.yaml", base_config(
        cache_dir, camera={"fps": 1000, "loop": True}, inference={"threads": 2}))
    daemon = start_daemon("--config", str(config), "--source", str(photo_video))
    daemon.wait_for(lambda e: e["event"] == "stats" and e["dropped"] > 0)
    code, took = stop_time(daemon, signal.SIGINT)
    assert code == 0 and took < STOP_WITHIN
    assert daemon.events[-1]["message"] == "stopped"


def test_failed_frames_are_logged_and_skipped(tmp_path, cache_dir, allergic_model,
                                              start_service):
    video = solid_video(tmp_path / "mixed.avi", [0, 0, 0, 255, 0, 0, 0, 255, 0, 0])
    # A queue that holds the whole video: no frame is dropped, so every seq is accounted for.
    config = write_config(tmp_path / "c.yaml", base_config(cache_dir, model={
        "weights": None, "torchscript": str(allergic_model), "labels": str(LABELS)},
        camera={"fps": 25}, queue={"size": 16}, output={"every_frame": True}))
    daemon = start_service("--config", str(config), "--source", str(video))
    assert daemon.finish(timeout=60) == 0
    errors = daemon.of("inference_error")
    assert [e["seq"] for e in errors] == [4, 8]
    assert "frame too bright for this model" in errors[0]["message"]
    assert {e["seq"] for e in daemon.of("prediction")} == {1, 2, 3, 5, 6, 7, 9, 10}
    assert daemon.of("stats")[-1]["failed_frames"] == 2


def test_a_model_that_keeps_failing_ends_the_daemon(tmp_path, cache_dir, allergic_model,
                                                    start_service):
    video = solid_video(tmp_path / "bright.avi", [255] * 30)
    config = write_config(tmp_path / "c.yaml", base_config(cache_dir, model={
        "weights": None, "torchscript": str(allergic_model), "labels": str(LABELS)},
        camera={"fps": 25}, inference={"max_consecutive_errors": 3}))
    daemon = start_service("--config", str(config), "--source", str(video))
    code = daemon.finish(timeout=60)
    assert code == 1, "non-zero so that Restart=on-failure restarts it"
    assert len(daemon.of("inference_error")) == 4
    final = daemon.of("error")[-1]
    assert "inference failed on 4 frames in a row" in final["message"]
    assert "max_consecutive_errors=3" in final["message"]


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


@pytest.mark.system
def test_queue_never_grows_under_a_much_faster_camera(tmp_path, cache_dir, photo_video,
                                                      start_daemon):
    config = write_config(tmp_path / "c.yaml", base_config(
        cache_dir, camera={"fps": 500, "loop": True}, queue={"size": 2},
        inference={"engine": "qnnpack"}, output={"interval": 0.5}))
    daemon = start_daemon("--config", str(config), "--source", str(photo_video))
    daemon.wait_for(lambda e: e["event"] == "stats" and e["processed"] > 20)
    rss_start = rss_kb(daemon.proc.pid)
    for _ in range(12):
        stats = daemon.wait_for(lambda e: e["event"] == "stats")
        in_flight = stats["captured"] - stats["processed"] - stats["dropped"]
        in_flight -= stats["failed_frames"]
        assert 0 <= in_flight <= 2 + 1 + 2, stats  # queue, one in the model, read skew
    rss_end = rss_kb(daemon.proc.pid)
    assert stats["dropped"] > stats["processed"], "the camera really was faster"
    assert rss_end - rss_start < 20_000, (rss_start, rss_end)
    daemon.signal(signal.SIGTERM)
    assert daemon.finish() == 0
