"""sd_notify without systemd: a real AF_UNIX datagram socket stands where systemd listens."""

import itertools
import os
import signal
import time

import pytest

from pidaemon.bench.notify_listener import NotifyListener

from .conftest import base_config, write_config


@pytest.fixture
def notify(tmp_path):
    listener = NotifyListener(tmp_path / "notify.sock")
    yield listener
    listener.close()


def env_for(notify: NotifyListener, watchdog_usec: int | None = None) -> dict:
    env = notify.env(dict(os.environ))
    if watchdog_usec:
        env["WATCHDOG_USEC"] = str(watchdog_usec)
    return env


def test_message_sequence_start_reload_stop(tmp_path, cache_dir, photo_video, notify,
                                            start_daemon):
    config = write_config(tmp_path / "c.yaml", base_config(cache_dir, camera={"loop": True}))
    daemon = start_daemon("--config", str(config), "--source", str(photo_video),
                          env=env_for(notify))
    notify.wait_for("READY=1")
    notify.wait_for("fps")  # a periodic STATUS after READY
    daemon.signal(signal.SIGHUP)
    notify.wait_for("RELOADING=1")
    notify.drain(1.0)
    daemon.signal(signal.SIGTERM)
    assert daemon.finish() == 0
    notify.drain(0.5)
    kinds = notify.kinds()
    ready = kinds.index("READY=1")
    assert kinds[:ready] == ["STATUS"] * ready, "nothing but STATUS before READY"
    reloading = kinds.index("RELOADING=1")
    assert "READY=1" in kinds[reloading:], "READY=1 again after a reload"
    assert kinds[-1] == "STOPPING=1"
    assert "WATCHDOG=1" not in kinds, "no pings without WATCHDOG_USEC"
    ready_message = notify.messages[ready][1]
    assert "STATUS=" in ready_message
    statuses = [m for _, m in notify.messages if m.startswith("STATUS=") and "fps" in m]
    assert statuses and "top-1" in statuses[-1] and "dropped" in statuses[-1]


def test_watchdog_pings_stop_when_inference_hangs(tmp_path, cache_dir, photo_video, notify,
                                                   start_daemon, hanging_model):
    config = write_config(tmp_path / "c.yaml", base_config(
        cache_dir, camera={"loop": True}, model=hanging_model))
    env = env_for(notify, watchdog_usec=2_000_000)
    daemon = start_daemon("--config", str(config), "--source", str(photo_video), env=env)
    # A stats line counting a captured frame: the inference thread took the first one and hung.
    daemon.wait_for(lambda e: e.get("event") == "stats" and e["captured"] > 0, timeout=60)
    hung_at = time.monotonic()
    notify.drain(6.0)
    pings = [t for t, m in notify.messages if m == "WATCHDOG=1"]
    assert pings, "pinged while healthy"
    assert pings[-1] < hung_at + 2.5, "pings stop once a heartbeat is older than WATCHDOG_USEC"
    assert daemon.proc.poll() is None, "the daemon itself does not exit: systemd decides"


def test_watchdog_pings_continue_while_waiting_for_a_camera(tmp_path, cache_dir, notify,
                                                            start_daemon):
    config = write_config(tmp_path / "c.yaml", base_config(cache_dir))
    daemon = start_daemon("--config", str(config), "--source", str(tmp_path / "absent.avi"),
                          env=env_for(notify, watchdog_usec=2_000_000))
    notify.wait_for("READY=1")
    ready_message = next(m for _, m in notify.messages if m.startswith("READY=1"))
    assert "waiting for camera" in ready_message
    notify.drain(6.0)
    ready_at = next(t for t, m in notify.messages if m.startswith("READY=1"))
    pings = [t for t, m in notify.messages if m == "WATCHDOG=1" and t > ready_at]
    assert len(pings) >= 4, "a camera that is away is not a hang"
    assert max(b - a for a, b in itertools.pairwise(pings)) < 2.0
    daemon.signal(signal.SIGTERM)
    assert daemon.finish() == 0
