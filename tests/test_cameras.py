"""Several cameras in one daemon: two video files and a loopback network camera at once, each
camera's predictions in its own photo order, one unplugged and back while the others go on, a
camera added by reload, and the config mistakes that stop it before READY.

The daemon runs in-process (tests.inprocess); the config checks call the CLI's main() in-process,
and one of them runs `pi-infer check-config` as a process to see its exit status."""

from __future__ import annotations

import time

import pytest

from .cli_inprocess import run_cli
from .conftest import base_config, pi_infer, write_config, write_video
from .labels import photo_runs
from .mjpeg_camera import MjpegCamera

ORDERS = {"door": ["coffee.png", "bird.bmp"], "yard": ["bird.bmp", "coffee.png"]}


def of_camera(events: list[dict], event: str, camera: str) -> list[dict]:
    return [e for e in events if e.get("event") == event and e.get("camera") == camera]


def cameras_config(cache_dir, cameras: dict) -> dict:
    config = base_config(cache_dir, output={"every_frame": True})
    del config["camera"]
    config["cameras"] = cameras
    return config


def topic(name: str) -> str:
    return f"pi-infer/pi/{name}"  # mqtt.node_id: pi


def check_config(capsys, path) -> tuple[int, list[str]]:
    """`pi-infer check-config PATH` in-process: its exit status and its stderr lines."""
    result = run_cli(capsys, "check-config", str(path))
    return result.returncode, result.stderr.strip().splitlines()


def looping(runs: list[str], order: list[str]) -> bool:
    """`runs` is `order` repeated (a looping video), from its start."""
    return len(runs) >= len(order) and runs == (order * len(runs))[:len(runs)]


def test_three_sources_unplug_one_and_add_one_by_reload(tmp_path, cache_dir, start_service):
    videos = {name: write_video(tmp_path / f"{name}.avi", photos, 1.0)
              for name, photos in ORDERS.items()}
    network = MjpegCamera("chelsea.png")
    network.plug_in()
    try:
        cameras = {name: {"device": str(path), "loop": True, "fps": 10}
                   for name, path in videos.items()}
        cameras["net"] = {"device": network.url, "stall_timeout": 1.0}
        path = write_config(tmp_path / "c.yaml", cameras_config(cache_dir, cameras))
        daemon = start_service("--config", str(path))
        ready = daemon.wait_for(lambda e: e["event"] == "lifecycle" and "ready" in e["message"])
        assert "net" in ready["message"] or "running" in ready["message"]
        # Each video through both its photos, then a third, so its order shows.
        for name in ORDERS:
            daemon.wait_for(lambda e, name=name: len(photo_runs(
                of_camera(daemon.events, "prediction", name))) >= 3, timeout=90)
        for name, order in ORDERS.items():
            runs = photo_runs(of_camera(daemon.events, "prediction", name))
            assert looping(runs, order), f"{name}: {runs}"
        assert set(photo_runs(of_camera(daemon.events, "prediction", "net"))) == {"cat"}
        stats = daemon.wait_for(lambda e: e["event"] == "stats" and e.get("camera") == "net")
        assert stats["message"].startswith("stats: camera=net fps=")

        network.unplug()
        lost = daemon.wait_for(lambda e: e["event"] == "camera" and e["state"] == "lost")
        assert lost["camera"] == "net" and lost["message"].startswith("camera net: lost")
        during = len(daemon.events)
        daemon.wait_for(lambda e: all(  # the videos go on while the network camera is away
            len(of_camera(daemon.events[during:], "prediction", name)) >= 10 for name in ORDERS),
            timeout=30)
        assert not of_camera(daemon.events[during + 5:], "prediction", "net")
        network.plug_in()
        recovered = daemon.wait_for(lambda e: e["event"] == "camera"
                                    and e["state"] == "recovered", timeout=30)
        assert recovered["camera"] == "net"
        mark = len(daemon.events)
        daemon.wait_for(lambda e: e["event"] == "prediction" and e.get("camera") == "net")

        # A reload adding a camera opens it alone.
        third = write_video(tmp_path / "shed.avi", ["chelsea.png", "coffee.png"], 1.0)
        cameras["shed"] = {"device": str(third), "loop": True, "fps": 10}
        write_config(path, cameras_config(cache_dir, cameras))
        daemon.reload()
        applied = daemon.wait_for(lambda e: e["event"] == "reload")
        assert applied["level"] == "info" and applied["changed"] == "cameras"
        daemon.wait_for(lambda e: len(photo_runs(of_camera(daemon.events, "prediction",
                                                           "shed"))) >= 2, timeout=60)
        assert looping(photo_runs(of_camera(daemon.events, "prediction", "shed")),
                       ["cat", "coffee.png"])
        opened = [e for e in daemon.events[mark:] if e["event"] == "camera"]
        assert [e["camera"] for e in opened] == ["shed"], opened
        daemon.stop()
        assert daemon.finish() == 0
    finally:
        network.unplug()


@pytest.mark.parametrize(("cameras", "key"), [
    ({"": {"device": "a.avi"}}, "cameras.'': names a camera"),
    ({"Front Door": {"device": "a.avi"}}, "cameras.Front Door: names a camera"),
    ({"a/b": {"device": "a.avi"}}, "cameras.a/b: names a camera"),
    ({"x" * 33: {"device": "a.avi"}}, "names a camera"),
    ({"a": {"device": 0}, "b": {"device": "/dev/video0"}},
     "cameras.b.device: /dev/video0 is already camera a's device"),
    ({"a": {"device": "csi"}, "b": {"device": "csi:0"}}, "cameras.b.device"),
    ({"a": {"devise": "a.avi"}}, "cameras.a.devise: unknown key; did you mean 'device'?"),
    ({"a": {"device": "a.avi", "fps": 0}}, "cameras.a.fps: must be at least 0.1"),
    ({"a": {"device": "a.avi", "regions": {"r": {"box": [0, 0, 2, 1]}}}},
     "cameras.a.regions.r.box: must be from 0 to 1"),
    ({}, "cameras: must be a mapping of camera names"),
    ([], "cameras: must be a mapping of camera names"),
])
def test_bad_cameras_exit_78_naming_the_key(tmp_path, capsys, cameras, key):
    path = tmp_path / "c.yaml"
    write_config(path, {"cameras": cameras})
    code, lines = check_config(capsys, path)
    assert code == 78, lines
    assert len(lines) == 1 and key in lines[0], lines


@pytest.mark.system
def test_bad_cameras_exit_78_as_a_process(tmp_path):
    """The exit status and the one line (no traceback) of the real process."""
    path = write_config(tmp_path / "c.yaml", {"cameras": {"a": {"devise": "a.avi"}}})
    done = pi_infer("check-config", str(path))
    assert done.returncode == 78, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pi-infer: error: "), lines
    assert "cameras.a.devise: unknown key; did you mean 'device'?" in lines[0]
    assert not done.stdout


def test_camera_and_cameras_together_is_an_error(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("camera:\n  device: a.avi\ncameras:\n  b: {device: b.avi}\n")
    code, lines = check_config(capsys, path)
    assert code == 78
    assert "line 1: camera: cannot be used with cameras:" in "\n".join(lines)


def test_mqtt_topics_and_metrics_per_camera(tmp_path, cache_dir, broker, subscribe,
                                            start_service):
    from .conftest import scrape

    subscriber = subscribe(broker.port)
    videos = {name: write_video(tmp_path / f"{name}.avi", photos, 1.0)
              for name, photos in ORDERS.items()}
    cameras = {name: {"device": str(path), "loop": True, "fps": 10}
               for name, path in videos.items()}
    cameras["yard"]["regions"] = {"left": {"box": [0, 0, 0.5, 1]}}
    config = cameras_config(cache_dir, cameras)
    config["mqtt"] = {"host": "127.0.0.1", "port": broker.port, "node_id": "pi"}
    config["metrics"] = {"enabled": True, "listen": "127.0.0.1:0"}
    daemon = start_service("--config", str(write_config(tmp_path / "c.yaml", config)))
    url = daemon.wait_for(lambda e: e["event"] == "metrics")["url"]
    for name in ORDERS:
        status = subscriber.wait_for(lambda m, name=name: m.topic == topic(
            f"{name}/status") and m.json()["processed"] > 0).json()
        assert status["camera"] == name and status["fps"] >= 0
        prediction = subscriber.find(lambda m, name=name: m.topic == topic(
            f"{name}/prediction")).json()
        assert prediction["camera"] == name
    state = subscriber.find(lambda m: m.topic == topic("yard/left/state"))
    assert state.payload and state.payload != "unknown"  # a label of the left half
    assert not [m for m in subscriber.seen if m.topic in (topic("status"), topic("prediction"))]
    samples = scrape(url)
    for name in ORDERS:
        assert samples[f'pi_infer_frames_processed_total{{camera="{name}"}}'] > 0
        assert samples[f'pi_infer_camera_state{{camera="{name}",'
                       f'pi_infer_camera_state="streaming"}}'] == 1
        assert samples[f'pi_infer_inference_latency_seconds_count{{camera="{name}"}}'] > 0
    assert "pi_infer_frames_processed_total" not in samples  # only per camera
    daemon.stop()
    assert daemon.finish() == 0


def test_home_assistant_names_a_camera_region_by_camera_and_region():
    from pidaemon.outputs.homeassistant import device_config
    from pidaemon.pipeline.snapshot import RegionInfo

    regions = (RegionInfo("gate", (0, 0, 1, 1), ["open", "closed"], "garden"),
               RegionInfo("gate", (0, 0, 1, 1), ["open", "closed"]))
    config = device_config("pi", "pi-infer/pi", regions, {"yard_door"}, 0)
    components = config["components"]
    assert set(components) == {"garden_gate", "gate", "yard_door"}
    assert components["garden_gate"]["state_topic"] == "pi-infer/pi/garden/gate/state"
    assert components["garden_gate"]["unique_id"] == "pi-infer_pi_garden_gate"
    assert components["gate"]["state_topic"] == "pi-infer/pi/gate/state"  # as without cameras
    assert components["yard_door"] == {"platform": "sensor"}  # removed from Home Assistant


def test_status_names_every_camera_and_a_missing_one_holds_back_neither_ready_nor_watchdog(
        tmp_path, cache_dir, start_service):
    from pidaemon.bench.notify_listener import NotifyListener

    notify = NotifyListener(tmp_path / "notify.sock")
    try:
        video = write_video(tmp_path / "door.avi", ORDERS["door"], 1.0)
        missing = tmp_path / "video9"
        cameras = {"door": {"device": str(video), "loop": True, "fps": 10},
                   "attic": {"device": str(missing)}}
        path = write_config(tmp_path / "c.yaml", cameras_config(cache_dir, cameras))
        env = {"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "2000000"}
        daemon = start_service("--config", str(path), env=env)
        notify.wait_for("READY=1")
        # In the file's order (the test's YAML writer sorts the names).
        notify.wait_for(" fps espresso")
        status = next(m for _, m in notify.messages if m.endswith(" fps espresso"))
        assert status.startswith(f"STATUS=attic waiting for {missing} · door "), status

        def pings() -> int:
            return len([m for _, m in notify.messages if m == "WATCHDOG=1"])

        before, deadline = pings(), time.monotonic() + 30
        while pings() <= before + 1:  # two more (one a second), with a camera still missing
            assert time.monotonic() < deadline, "the watchdog pings stopped"
            notify.drain(0.2)
        waiting = daemon.seen_or_wait(lambda e: e["event"] == "camera"
                                      and e.get("camera") == "attic")
        assert waiting["state"] == "waiting" and waiting["level"] == "warning"
        daemon.stop()
        assert daemon.finish() == 0
    finally:
        notify.close()
