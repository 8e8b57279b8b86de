"""`pi-infer run` with `inference.engine: xnnpack`: the photos in order, READY, a reload that
changes the threads of the child process running the model, a model swap that ends the old
child, SIGTERM, and a child that dies (the daemon exits 1 so that systemd restarts it).

Each test watches the daemon's child process and signals: the module is marked system."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from .conftest import base_config, require_executorch, write_config
from .labels import photo_runs

require_executorch()

pytestmark = pytest.mark.system


def children(pid: int) -> list[int]:
    """The processes `pid` started (the xnnpack engine's child)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def threads_of(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/task").iterdir()))


def gone(pid: int, timeout: float) -> bool:
    """True once `pid` has exited (it is reaped by its parent) within `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
                return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def is_ready(event: dict) -> bool:
    return event["event"] == "lifecycle" and event["message"].startswith("ready")


def xnnpack_config(cache: Path, **sections: dict) -> dict:
    config = base_config(cache, **sections)
    config["inference"]["engine"] = "xnnpack"
    return config


def test_predictions_follow_the_photos_in_order(tmp_path, xnnpack_cache, photo_video,
                                                start_daemon):
    config = write_config(tmp_path / "c.yaml", xnnpack_config(
        xnnpack_cache, output={"every_frame": True}))
    daemon = start_daemon("--config", str(config), "--source", str(photo_video),
                          "--duration", "30")
    assert daemon.finish(timeout=90) == 0, daemon.stderr
    model = daemon.of("model")[0]
    assert model["engine"] == "xnnpack" and "run in a child process" in model["message"]
    assert any(is_ready(e) for e in daemon.events)
    assert photo_runs(daemon.of("prediction"))[:5] == [
        "grace_hopper.jpg", "cat", "coffee.png", "bird.bmp", "cat"]
    assert not [e for e in daemon.events if e["level"] == "error"]
    assert "threadpool" not in daemon.stderr  # ExecuTorch's own log lines stay out of the journal


def start_predicting(tmp_path, xnnpack_cache, photo_video, start_daemon):
    """The daemon on the looping photo video with the xnnpack engine, once it predicts; its
    config file and settings, which a test edits and reloads."""
    path = tmp_path / "c.yaml"
    config = xnnpack_config(xnnpack_cache, camera={"loop": True, "device": str(photo_video)},
                            output={"every_frame": True})
    write_config(path, config)
    daemon = start_daemon("--config", str(path))
    daemon.wait_for(lambda e: e["event"] == "prediction")
    return path, config, daemon


def test_reload_changes_the_childs_threads_and_sigterm_ends_both(tmp_path, xnnpack_cache,
                                                                 photo_video, start_daemon):
    path, config, daemon = start_predicting(tmp_path, xnnpack_cache, photo_video, start_daemon)
    [child] = children(daemon.proc.pid)
    before = threads_of(child)
    config["inference"]["threads"] = 2
    write_config(path, config)
    daemon.signal(signal.SIGHUP)
    applied = daemon.wait_for(lambda e: e["event"] == "reload")
    assert applied["level"] == "info" and "inference" in applied["changed"]
    deadline = time.monotonic() + 10  # applied by the inference thread before its next frame
    while threads_of(child) != before + 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threads_of(child) == before + 1  # XNNPACK's pool: one worker beside the caller
    assert children(daemon.proc.pid) == [child]  # the same child, its pool resized
    seen = len(daemon.of("prediction"))
    daemon.wait_for(lambda e: e["event"] == "prediction" and len(daemon.of("prediction")) > seen)
    stopping = time.monotonic()
    daemon.signal(signal.SIGTERM)
    assert daemon.finish(timeout=10) == 0, daemon.stderr
    assert time.monotonic() - stopping < 2.0
    assert gone(child, 1)
    assert not [e for e in daemon.events if e["level"] == "error"]


def test_a_model_swap_ends_the_old_child(tmp_path, xnnpack_cache, photo_video, start_daemon):
    path, config, daemon = start_predicting(tmp_path, xnnpack_cache, photo_video, start_daemon)
    [old] = children(daemon.proc.pid)
    config["model"]["top_k"] = 3  # a live key
    config["output"]["interval"] = 0.4
    write_config(path, config)
    daemon.signal(signal.SIGHUP)
    daemon.wait_for(lambda e: e["event"] == "reload")
    config["camera"]["fps"] = 12
    config["inference"]["engine"] = "qnnpack"
    write_config(path, config)
    daemon.signal(signal.SIGHUP)
    reloaded = daemon.wait_for(lambda e: e["event"] == "model" and "reloaded" in e["message"],
                               timeout=120)
    assert "engine qnnpack" in reloaded["message"]
    assert gone(old, 5)
    deadline = time.monotonic() + 5  # an exited child is listed until close() has reaped it
    while children(daemon.proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert children(daemon.proc.pid) == []
    seen = len(daemon.of("prediction"))
    daemon.wait_for(lambda e: e["event"] == "prediction" and len(daemon.of("prediction")) > seen)
    daemon.signal(signal.SIGTERM)
    assert daemon.finish() == 0, daemon.stderr


def test_a_killed_child_ends_the_daemon_for_a_restart(tmp_path, xnnpack_cache, photo_video,
                                                      start_daemon):
    """The model cannot come back by itself: the daemon exits 1 (not 78), which the unit's
    Restart=on-failure turns into a restart with a new child."""
    config = write_config(tmp_path / "c.yaml", xnnpack_config(
        xnnpack_cache, camera={"loop": True, "device": str(photo_video)},
        inference={"max_consecutive_errors": 3}))
    daemon = start_daemon("--config", str(config))
    daemon.wait_for(lambda e: e["event"] == "stats" and e["processed"] > 0)
    [child] = children(daemon.proc.pid)
    os.kill(child, signal.SIGKILL)
    assert daemon.finish(timeout=20) == 1, daemon.stderr
    errors = daemon.of("inference_error")
    assert errors and "the ExecuTorch process exited (status -9)" in errors[0]["message"]
    [error] = daemon.of("error")
    assert "inference failed on 4 frames in a row" in error["message"] and error["exit_code"] == 1
