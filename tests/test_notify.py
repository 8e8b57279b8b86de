"""sd_notify without systemd: a real AF_UNIX datagram socket stands where systemd listens.

The daemon runs in-process (tests.inprocess); NOTIFY_SOCKET and WATCHDOG_USEC are in its
environment while the Service reads them, as systemd would set them for the process.
"""

import itertools
import time

import pytest

from pidaemon.bench.notify_listener import NotifyListener
from pidaemon.model.classifier import load_classifier

from .conftest import base_config, write_config
from .fakes import SlowModel

WATCHDOG_USEC = 2_000_000


@pytest.fixture
def notify(tmp_path):
    listener = NotifyListener(tmp_path / "notify.sock")
    yield listener
    listener.close()


def env_for(notify: NotifyListener, watchdog_usec: int | None = None) -> dict:
    env = {"NOTIFY_SOCKET": notify.path}
    if watchdog_usec:
        env["WATCHDOG_USEC"] = str(watchdog_usec)
    return env


def wait_for_messages(notify: NotifyListener, enough, timeout: float = 30) -> None:
    """Collect notifications until `enough(notify)` holds."""
    deadline = time.monotonic() + timeout
    while not enough(notify):
        assert time.monotonic() < deadline, [m for _, m in notify.messages]
        notify.drain(0.2)


def pings_after(notify: NotifyListener, since: float) -> list[float]:
    return [t for t, m in notify.messages if m == "WATCHDOG=1" and t > since]


def test_message_sequence_start_reload_stop(tmp_path, cache_dir, photo_video, notify,
                                            start_service):
    config = write_config(tmp_path / "c.yaml", base_config(cache_dir, camera={"loop": True}))
    daemon = start_service("--config", str(config), "--source", str(photo_video),
                           env=env_for(notify))
    notify.wait_for("READY=1")
    notify.wait_for("fps")  # a periodic STATUS after READY
    daemon.reload()
    notify.wait_for("RELOADING=1")
    wait_for_messages(notify, lambda n: "READY=1" in n.kinds()[n.kinds().index("RELOADING=1"):])
    daemon.stop()
    assert daemon.finish() == 0
    notify.drain(0)  # the last notifications were sent before run() returned
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
                                                   start_service):
    config = write_config(tmp_path / "c.yaml", base_config(cache_dir, camera={"loop": True}))
    loaded: list[SlowModel] = []

    def load_hanging(model, inference):
        """The real model, made to hang on the first camera frame until the test ends."""
        hanging = SlowModel(load_classifier(model, inference))
        hanging.running.clear()
        loaded.append(hanging)
        return hanging

    daemon = start_service("--config", str(config), "--source", str(photo_video),
                           env=env_for(notify, WATCHDOG_USEC), load_model=load_hanging)
    try:
        # A stats line counting a captured frame: the inference thread took the first one and
        # hung.
        daemon.wait_for(lambda e: e.get("event") == "stats" and e["captured"] > 0, timeout=60)
        hung_at = time.monotonic()
        # Pings come every second while every heartbeat is younger than 2 s: none may come in
        # the two seconds after the last one allowed.
        notify.drain(4.5)
        pings = [t for t, m in notify.messages if m == "WATCHDOG=1"]
        assert pings, "pinged while healthy"
        assert pings[-1] < hung_at + 2.5, \
            "pings stop once a heartbeat is older than WATCHDOG_USEC"
        assert daemon.running, "the daemon itself does not exit: systemd decides"
    finally:
        for model in loaded:
            model.running.set()
    daemon.stop()
    assert daemon.finish() == 0


def test_watchdog_pings_continue_while_waiting_for_a_camera(tmp_path, cache_dir, notify,
                                                            start_service):
    config = write_config(tmp_path / "c.yaml", base_config(cache_dir))
    daemon = start_service("--config", str(config), "--source", str(tmp_path / "absent.avi"),
                           env=env_for(notify, WATCHDOG_USEC))
    ready_at = notify.wait_for("READY=1")
    ready_message = next(m for _, m in notify.messages if m.startswith("READY=1"))
    assert "waiting for camera" in ready_message
    wait_for_messages(notify, lambda n: len(pings_after(n, ready_at)) >= 4, timeout=15)
    pings = pings_after(notify, ready_at)
    assert len(pings) >= 4, "a camera that is away is not a hang"
    assert max(b - a for a, b in itertools.pairwise(pings)) < 2.0
    daemon.stop()
    assert daemon.finish() == 0
