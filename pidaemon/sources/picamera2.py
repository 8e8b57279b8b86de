"""Raspberry Pi CSI cameras through Picamera2, for `camera.backend: picamera2` (or `auto`).

Since Bullseye the Pi's ribbon-cable cameras are driven by libcamera: the V4L2 node of the CSI
receiver (`unicam` on a Pi 4 and earlier, `rp1-cfe` on a Pi 5) delivers raw sensor data only
after libcamera has configured the sensor and the ISP, which OpenCV cannot do. Picamera2 comes
from the OS (`python3-picamera2`), so the service's venv sees it only when it was made with
`--system-site-packages`.

`auto` picks picamera2 when `camera.device` is `csi` / `csi:N`, or when it is the V4L2 node of
a CSI receiver (by its name under /sys/class/video4linux) and picamera2 is importable; anything
else is a V4L2 device, a network stream or a video file as before.

The adapter stays thin: it uses only `Picamera2.global_camera_info`, `Picamera2(n)`,
`create_video_configuration`, `configure`, `start`, `camera_configuration`, `capture_metadata`,
`capture_array`, `wait` and `close`, and returns frames the way cv2.VideoCapture does.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
from pathlib import Path
from typing import Any

from pidaemon.config import PICAMERA2_MISSING, CameraConfig, csi_index, module_available
from pidaemon.errors import first_line
from pidaemon.eventlog import emit
from pidaemon.sources.base import FrameSource, Grant

SYSFS_V4L = Path("/sys/class/video4linux")
CSI_RECEIVERS = ("unicam", "rp1-cfe")  # V4L2 node names start with the driver's name
# libcamera's "RGB888" is B, G, R in memory: the channel order OpenCV and the rest of
# pi-infer use. ("BGR888" would give R, G, B.)
FORMAT = "RGB888"
OPEN_TIMEOUT = 5.0  # the first frame after start() (exposure and white balance settle)
READ_TIMEOUT = 1.0  # like the V4L2 read timeout: a stalled camera never blocks for longer
# Picamera2's wait(job, timeout) raises the futures TimeoutError (the builtin one from 3.11).
WAIT_TIMEOUT = (TimeoutError, concurrent.futures.TimeoutError)


def is_csi_receiver(device: str | int, sysfs: Path = SYSFS_V4L) -> bool:
    """`device` is a V4L2 node of the Pi's CSI receiver, which only libcamera can drive."""
    node = f"video{device}" if isinstance(device, int) else Path(os.path.realpath(device)).name
    try:
        name = (sysfs / node / "name").read_text().strip()
    except OSError:
        return False
    return name.startswith(CSI_RECEIVERS)


def wants_picamera2(config: CameraConfig, sysfs: Path = SYSFS_V4L) -> bool:
    """Whether `camera.backend` (auto: see the module docstring) means picamera2.

    Auto on a CSI receiver node without picamera2 falls back to V4L2, with a warning that says
    how to fix it, because that read can only fail.
    """
    if config.backend != "auto":
        return config.backend == "picamera2"
    if csi_index(config.device) is not None:
        return True
    device = config.device
    if not (isinstance(device, int) or device.startswith("/dev/")):
        return False
    if not is_csi_receiver(device, sysfs):
        return False
    if module_available("picamera2"):
        return True
    emit("log", f"camera: {device} is the Raspberry Pi's CSI receiver, which V4L2 cannot read; "
         f"camera.backend: {PICAMERA2_MISSING}", logging.WARNING)
    return False


class Picamera2Source(FrameSource):
    """One CSI camera; `read()` returns BGR frames like cv2.VideoCapture.read()."""

    negotiates = True
    open_patience = OPEN_TIMEOUT + 2.0  # open() waits up to OPEN_TIMEOUT for the first frame

    def __init__(self, config: CameraConfig, open_timeout: float = OPEN_TIMEOUT) -> None:
        """`open_timeout`: seconds open() waits for the first frame (tests wait less)."""
        super().__init__(config.device)
        self.config = config
        self.open_timeout = open_timeout
        self._camera: Any = None

    def open(self) -> None:
        """Open, configure and start the camera, or raise OSError with a reason to act on."""
        config = self.config
        picamera2_class = _import_picamera2()
        index = csi_index(config.device) or 0
        cameras = picamera2_class.global_camera_info()
        if index >= len(cameras):
            raise OSError(f"libcamera finds no camera {index} ({len(cameras)} connected); check "
                          f"the ribbon cable and `rpicam-hello --list-cameras`")
        model = str(cameras[index].get("Model", "unknown"))
        try:
            camera = picamera2_class(index)
        except (RuntimeError, IndexError) as exc:
            raise OSError(f"cannot open camera {index} ({model}): {first_line(exc)} (is another "
                          f"program using it?)") from None
        try:
            # queue=False: every capture waits for a new frame, so a slow reader gets the
            # freshest one rather than one the camera kept from earlier.
            camera.configure(camera.create_video_configuration(
                main={"size": (config.width, config.height), "format": FORMAT},
                controls={"FrameRate": config.fps}, queue=False))
            camera.start()
            width, height = camera.camera_configuration()["main"]["size"]
            metadata = camera.wait(camera.capture_metadata(wait=False),
                                   timeout=self.open_timeout)
        except WAIT_TIMEOUT:
            _close(camera)
            raise OSError(f"camera {index} ({model}) started but sent no frame within "
                          f"{self.open_timeout:g} s") from None
        except Exception as exc:  # noqa: BLE001 - libcamera reports failures as several types
            _close(camera)
            raise OSError(f"cannot start camera {index} ({model}): {first_line(exc)}") from None
        fps = 1e6 / metadata["FrameDuration"] if metadata.get("FrameDuration") else config.fps
        self.grant = Grant(f"{width}x{height} {FORMAT} at {fps:.1f} fps from {model}",
                           {"width": width, "height": height, "fourcc": FORMAT,
                            "camera_fps": round(fps, 2), "backend": "picamera2",
                            "model": model}, "picamera2")
        self._camera = camera

    def read(self) -> tuple[bool, Any]:
        """(True, frame), or (False, None) when no frame came within READ_TIMEOUT."""
        if self._camera is None:
            return False, None
        try:
            frame = self._camera.wait(self._camera.capture_array("main", wait=False),
                                      timeout=READ_TIMEOUT)
        except (*WAIT_TIMEOUT, RuntimeError):
            return False, None
        return True, frame

    def release(self) -> None:
        if self._camera is not None:
            _close(self._camera)
            self._camera = None


def _import_picamera2() -> Any:
    try:
        from picamera2 import Picamera2
    except ModuleNotFoundError as exc:
        if exc.name != "picamera2":
            raise OSError(f"cannot import picamera2: {first_line(exc)}") from None
        raise OSError(f"camera.backend: {PICAMERA2_MISSING}") from None
    except Exception as exc:  # noqa: BLE001 - e.g. a numpy ABI mismatch inside its imports
        reason = first_line(exc)
        # Debian's simplejpeg is built for its numpy 1.x; the venv's numpy 2 cannot load it.
        hint = "; install simplejpeg into the venv with pip" if "numpy" in reason else ""
        raise OSError(f"cannot import picamera2: {reason}{hint}") from None
    return Picamera2


def _close(camera: Any) -> None:
    """Stop and close (close() stops first), ignoring a camera that already went away."""
    try:
        camera.close()
    except Exception:  # noqa: BLE001 - releasing must not mask why we are releasing
        pass
