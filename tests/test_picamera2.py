"""camera.backend and the Picamera2 adapter.

There is no Pi camera here: the adapter runs against tests/picamera2_standin, which implements
the Picamera2 calls it makes and produces real frames from the shared photos on a sensor clock.
The daemon itself, its model and its output are the real ones, run in-process; one config error
goes through `pi-infer run` as a process, for its exit status.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from pidaemon.config import PICAMERA2_MISSING, CameraConfig, csi_index, module_available
from pidaemon.errors import EX_CONFIG
from pidaemon.sources import make_source
from pidaemon.sources.network import NetworkSource
from pidaemon.sources.picamera2 import OPEN_TIMEOUT, Picamera2Source, wants_picamera2
from pidaemon.sources.v4l2 import V4L2Source
from pidaemon.sources.video import VideoFileSource

from .cli_inprocess import run_cli
from .conftest import IMAGES, PHOTO_ORDER, base_config, pi_infer, write_config
from .labels import photo_runs

STANDIN = Path(__file__).resolve().parent / "picamera2_standin"


needs_no_real_picamera2 = pytest.mark.skipif(
    module_available("picamera2"), reason="a real picamera2 is installed: it cannot be missing")


@pytest.fixture
def standin(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The stand-in importable in this process, showing the coffee photo."""
    monkeypatch.syspath_prepend(str(STANDIN))
    monkeypatch.setenv("PICAMERA2_STANDIN_IMAGES", str(IMAGES / "coffee.png"))
    yield
    sys.modules.pop("picamera2", None)  # or later tests would still find it


def standin_settings(monkeypatch: pytest.MonkeyPatch, **settings: str) -> None:
    """The stand-in's settings (PICAMERA2_STANDIN_*), read when a camera is opened."""
    for name, value in settings.items():
        monkeypatch.setenv(f"PICAMERA2_STANDIN_{name.upper()}", value)


def cli_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """`pi-infer ARGS` in-process: its exit status and what it wrote (stdout, then stderr)."""
    result = run_cli(capsys, *args)
    return result.returncode, result.stdout + result.stderr


def fake_sysfs(root: Path, nodes: dict[str, str]) -> Path:
    """A /sys/class/video4linux tree: video node -> the name its driver gives it."""
    for node, name in nodes.items():
        (root / node).mkdir(parents=True)
        (root / node / "name").write_text(name + "\n")
    return root


def test_auto_picks_picamera2_for_pi_cameras_only(tmp_path, standin):
    sysfs = fake_sysfs(tmp_path, {"video0": "unicam-image", "video1": "rp1-cfe-csi2_ch0",
                                  "video2": "HD Pro Webcam C920"})

    def picamera2(device: str | int) -> bool:
        return wants_picamera2(CameraConfig(device=device), sysfs)

    assert picamera2("csi") and picamera2("csi:1")
    assert picamera2("/dev/video0") and picamera2(1)  # the CSI receivers of a Pi 4 and a Pi 5
    assert not picamera2("/dev/video2") and not picamera2(2) and not picamera2("/dev/video9")

    def kind(device: str | int, backend: str = "auto") -> type:
        return type(make_source(CameraConfig(device=device, backend=backend)))

    assert kind("csi:1") is Picamera2Source
    assert kind("/dev/video2", "picamera2") is Picamera2Source
    assert kind("clip.mp4") is VideoFileSource and kind("rtsp://cam/stream") is NetworkSource
    assert kind("/dev/video0", "v4l2") is kind(0, "v4l2") is V4L2Source
    assert kind("/dev/video7", "file") is VideoFileSource
    assert csi_index("csi:2") == 2 and csi_index("csi2") is None


@needs_no_real_picamera2
def test_a_csi_receiver_without_picamera2_falls_back_with_a_hint(tmp_path, caplog):
    sysfs = fake_sysfs(tmp_path, {"video0": "unicam-image"})
    with caplog.at_level(logging.WARNING, logger="pi-infer"):
        assert not wants_picamera2(CameraConfig(device="/dev/video0"), sysfs)
    assert "CSI receiver, which V4L2 cannot read" in caplog.text
    assert PICAMERA2_MISSING in caplog.text


def test_adapter_returns_bgr_frames_like_opencv(standin):
    capture = make_source(CameraConfig(device="csi", width=321, height=240, fps=30))
    assert isinstance(capture, Picamera2Source) and capture.live
    capture.open()
    try:
        assert capture.grant.fields == {"width": 320, "height": 240, "fourcc": "RGB888",
                                        "camera_fps": 30.0, "backend": "picamera2",
                                        "model": "imx708"}
        ok, frame = capture.read()
    finally:
        capture.release()
    assert ok and frame.shape == (240, 320, 3) and frame.dtype == np.uint8
    # The photo as OpenCV reads it, in OpenCV's B, G, R order: "RGB888" in libcamera's terms.
    photo = cv2.imread(str(IMAGES / "coffee.png"))
    assert photo.shape[1] / photo.shape[0] > 320 / 240  # wider: it fills the width
    height = round(photo.shape[0] * 320 / photo.shape[1])
    top = (240 - height) // 2
    expected = cv2.resize(photo, (320, height), interpolation=cv2.INTER_AREA)
    assert np.array_equal(frame[top:top + height], expected)
    assert not frame[:top].any()


def test_adapter_reports_what_stops_it(standin, monkeypatch):
    with pytest.raises(OSError, match=r"libcamera finds no camera 1 \(1 connected\)"):
        Picamera2Source(CameraConfig(device="csi:1")).open()
    first = Picamera2Source(CameraConfig(device="csi"))
    first.open()
    try:
        with pytest.raises(OSError, match=r"cannot open camera 0 \(imx708\).*another program"):
            Picamera2Source(CameraConfig(device="csi")).open()
    finally:
        first.release()
    monkeypatch.setenv("PICAMERA2_STANDIN_STALL_AFTER", "0")
    assert Picamera2Source(CameraConfig(device="csi")).open_timeout == OPEN_TIMEOUT == 5.0
    with pytest.raises(OSError, match=r"started but sent no frame within 0\.5 s"):
        Picamera2Source(CameraConfig(device="csi"), open_timeout=0.5).open()


def test_daemon_classifies_pi_camera_frames(tmp_path, cache_dir, standin, monkeypatch,
                                            start_service):
    standin_settings(monkeypatch, seconds_each="0.5",
                     images=os.pathsep.join(str(IMAGES / name) for name in PHOTO_ORDER))
    config = write_config(tmp_path / "c.yaml", base_config(
        cache_dir, camera={"device": "csi", "width": 320, "height": 240},
        output={"every_frame": True}))
    daemon = start_service("--config", str(config))
    # Each photo stays in view for 5 frames; the fifth photo's run shows all five in order.
    daemon.wait_for(lambda e: e["event"] == "prediction"
                    and len(photo_runs(daemon.of("prediction"))) >= 5, timeout=60)
    daemon.stop()
    assert daemon.finish() == 0
    opened = daemon.of("camera")[0]
    assert opened["state"] == "opened" and opened["backend"] == "picamera2"
    assert "camera: opened csi (picamera2): 320x240 RGB888 at 10.0 fps from imx708 (asked " \
           "320x240 at 10.0 fps)" == opened["message"]
    runs = photo_runs(daemon.of("prediction"))
    assert runs[:5] == ["grace_hopper.jpg", "cat", "coffee.png", "bird.bmp", "cat"]


def test_a_stalled_pi_camera_is_reopened(tmp_path, cache_dir, standin, monkeypatch,
                                         start_service):
    standin_settings(monkeypatch, stall_after="5")
    config = write_config(tmp_path / "c.yaml", base_config(
        cache_dir, camera={"device": "csi", "stall_timeout": 1.0}))
    daemon = start_service("--config", str(config))
    lost = daemon.wait_for(lambda e: e["event"] == "camera" and e["state"] == "lost")
    assert lost["reason"] == "no frame for 1 s"
    recovered = daemon.wait_for(lambda e: e["event"] == "camera" and e["state"] == "recovered")
    assert recovered["backend"] == "picamera2"
    # The first opening sent 5 frames: more can only come from the reopened camera.
    daemon.wait_for(lambda e: e["event"] == "stats" and e["captured"] > 5)


def test_no_pi_camera_connected_still_gets_ready(tmp_path, cache_dir, standin, monkeypatch,
                                                 start_service):
    standin_settings(monkeypatch, cameras="0")
    config = write_config(tmp_path / "c.yaml", base_config(cache_dir, camera={"device": "csi"}))
    daemon = start_service("--config", str(config))
    waiting = daemon.wait_for(lambda e: e["event"] == "camera")
    assert waiting["state"] == "waiting"
    assert "libcamera finds no camera 0 (0 connected)" in waiting["reason"]
    daemon.wait_for(lambda e: e["event"] == "lifecycle" and e["message"].startswith("ready"))


@needs_no_real_picamera2
@pytest.mark.parametrize("camera", [{"backend": "picamera2"}, {"device": "csi"}])
@pytest.mark.parametrize("command", ["check-config", "run"])
def test_picamera2_missing_is_a_clear_config_error(tmp_path, cache_dir, capsys, camera, command):
    path = write_config(tmp_path / "c.yaml", base_config(cache_dir, camera=camera))
    code, output = cli_main(capsys, *(["check-config", str(path)] if command == "check-config"
                                      else ["run", "--config", str(path)]))
    assert code == EX_CONFIG
    assert f"camera.backend: {PICAMERA2_MISSING}" in output and "Traceback" not in output
    assert PICAMERA2_MISSING == ("picamera2 needs the python3-picamera2 package (sudo apt install "
                                 "python3-picamera2) and a venv with --system-site-packages")


@needs_no_real_picamera2
@pytest.mark.system
def test_picamera2_missing_exits_78_without_a_traceback(tmp_path, cache_dir):
    """`pi-infer run` as a process: exit status 78 and one line, no traceback."""
    path = write_config(tmp_path / "c.yaml", base_config(cache_dir, camera={"device": "csi"}))
    result = pi_infer("run", "--config", str(path))
    assert result.returncode == EX_CONFIG
    output = result.stdout + result.stderr
    assert f"camera.backend: {PICAMERA2_MISSING}" in output and "Traceback" not in output


def test_csi_with_a_backend_that_cannot_read_it(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("camera:\n  device: csi\n  backend: v4l2\n")
    result = run_cli(capsys, "check-config", str(path))
    assert result.returncode == EX_CONFIG
    assert "camera.backend: v4l2 cannot read csi, a Raspberry Pi camera" in result.stderr
