"""A stand-in for Raspberry Pi OS's `picamera2` package, for machines without a Pi camera.

It implements only the calls pi-infer's adapter makes, with the behaviour the adapter relies on:
`global_camera_info()` lists the connected cameras; `Picamera2(n)` raises RuntimeError when camera
n is absent or already open; `create_video_configuration()` fills in defaults and evens out the
size like the real one; `configure()` refuses unknown formats; frames come on the sensor's own
clock at the `FrameRate` control; with `queue=False` a capture waits for the next frame;
`wait=False` returns a job that `wait(job, timeout)` finishes or times out on; format names
follow libcamera ("RGB888" is B, G, R in memory); metadata carries `FrameDuration` in
microseconds; `close()` stops the camera first.

Frames are real photos (each shown whole, centred on black, at the stream size), set by:
  PICAMERA2_STANDIN_IMAGES        photos shown in turn, separated by os.pathsep
  PICAMERA2_STANDIN_SECONDS_EACH  seconds each photo stays in view (default 1)
  PICAMERA2_STANDIN_CAMERAS       cameras connected (default 1)
  PICAMERA2_STANDIN_STALL_AFTER   frames each opened camera sends before it stops (default never)
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import cv2
import numpy as np

__all__ = ["Picamera2"]

MODEL = "imx708"
SENSOR_SIZE = (4608, 2592)
_CHANNELS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "RGB888": lambda bgr: bgr,
    "BGR888": lambda bgr: cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB),
    "XRGB8888": lambda bgr: cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA),
    "XBGR8888": lambda bgr: cv2.cvtColor(bgr, cv2.COLOR_BGR2RGBA),
}
_opened: set[int] = set()
_opened_lock = threading.Lock()


class _Job:
    """What `wait=False` returns: finished by the camera thread with the next frame."""

    def __init__(self, make: Callable[[dict[str, Any]], Any]) -> None:
        self.make = make
        self.future: Future[Any] = Future()


class Picamera2:
    @staticmethod
    def global_camera_info() -> list[dict[str, Any]]:
        count = int(os.environ.get("PICAMERA2_STANDIN_CAMERAS", "1"))
        return [{"Model": MODEL, "Location": 2, "Rotation": 180,
                 "Id": f"/base/axi/pcie@120000/rp1/i2c@{88000 + 2 * i}/imx708@1a", "Num": i}
                for i in range(count)]

    def __init__(self, camera_num: int = 0) -> None:
        with _opened_lock:
            if camera_num >= len(self.global_camera_info()) or camera_num in _opened:
                raise RuntimeError("Camera __init__ sequence did not complete.")
            _opened.add(camera_num)
        self.camera_idx = camera_num
        self.is_open = True
        self.started = False
        self.camera_config: dict[str, Any] | None = None
        self._jobs: deque[_Job] = deque()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def create_video_configuration(self, main: dict[str, Any] | None = None,
                                   controls: dict[str, Any] | None = None,
                                   queue: bool = True) -> dict[str, Any]:
        if not self.is_open:
            raise RuntimeError("Camera not opened")
        stream: dict[str, Any] = {"format": "XBGR8888", "size": (1280, 720)}
        for key, value in (main or {}).items():
            if key not in ("format", "size"):
                raise ValueError(f"Bad key {key!r}: valid stream configuration keys are "
                                 f"('format', 'size')")
            stream[key] = value
        width, height = stream["size"]
        stream["size"] = (width - width % 2, height - height % 2)
        return {"use_case": "video", "buffer_count": 6, "queue": queue,
                "main": stream, "lores": None, "raw": {"size": stream["size"]},
                "controls": {"FrameDurationLimits": (33333, 33333), **(controls or {})}}

    def configure(self, camera_config: dict[str, Any]) -> None:
        if self.started:
            raise RuntimeError("Camera must be stopped before configuring")
        main = camera_config["main"]
        if main["format"] not in _CHANNELS:
            raise RuntimeError(f"Bad format {main['format']} in stream main")
        width, height = main["size"]
        if width % 2 or height % 2:
            raise RuntimeError("width and height should be even")
        channels = 4 if main["format"].startswith("X") else 3
        main["stride"] = width * channels
        main["framesize"] = width * height * channels
        self.camera_config = camera_config

    def camera_configuration(self) -> dict[str, Any] | None:
        return self.camera_config

    def start(self) -> None:
        if self.camera_config is None:
            raise RuntimeError("Camera has not been configured")
        if self.started:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._sensor, name="picamera2-standin",
                                        daemon=True)
        self._thread.start()
        self.started = True

    def close(self) -> None:
        if not self.is_open:
            return
        if self.started:  # the real close() stops the camera first
            self._stop.set()
            assert self._thread is not None
            self._thread.join()
            self.started = False
        with _opened_lock:
            _opened.discard(self.camera_idx)
        self.is_open = False
        self.camera_config = None

    def capture_array(self, name: str = "main", wait: bool | None = None) -> Any:
        return self._dispatch(lambda request: request[name].copy(), wait)

    def capture_metadata(self, wait: bool | None = None) -> Any:
        return self._dispatch(lambda request: dict(request["metadata"]), wait)

    def wait(self, job: _Job, timeout: float | None = None) -> Any:
        return job.future.result(timeout=timeout)

    # -- the camera ---------------------------------------------------------------------------
    def _dispatch(self, make: Callable[[dict[str, Any]], Any], wait: bool | None) -> Any:
        job = _Job(make)
        with self._lock:
            self._jobs.append(job)
        return job if wait is False else self.wait(job)

    def _frame_duration_us(self) -> int:
        assert self.camera_config is not None
        controls = self.camera_config["controls"]
        if "FrameRate" in controls:
            return int(1e6 / controls["FrameRate"])
        return int(controls["FrameDurationLimits"][0])

    def _sensor(self) -> None:
        """Produce frames on a fixed clock; each one finishes the oldest waiting job, if any.

        With queue=False nothing is kept, so a capture always gets a frame made after it asked.
        """
        assert self.camera_config is not None
        main = self.camera_config["main"]
        duration_us = self._frame_duration_us()
        period = duration_us / 1e6
        photos = _load_photos(main["size"])
        convert = _CHANNELS[main["format"]]
        each = max(1, round(float(os.environ.get("PICAMERA2_STANDIN_SECONDS_EACH", "1")) / period))
        stall_after = os.environ.get("PICAMERA2_STANDIN_STALL_AFTER")
        limit = int(stall_after) if stall_after else None
        sent = 0
        due = time.monotonic() + period
        while not self._stop.wait(max(0.0, due - time.monotonic())):
            due += period
            if limit is not None and sent >= limit:
                continue  # a stalled sensor: the camera stays open but sends nothing
            request = {"main": convert(photos[(sent // each) % len(photos)]),
                       "metadata": {"FrameDuration": duration_us,
                                    "SensorTimestamp": time.monotonic_ns()}}
            sent += 1
            with self._lock:
                job = self._jobs.popleft() if self._jobs else None
            if job is not None:
                try:
                    job.future.set_result(job.make(request))
                except Exception as exc:  # noqa: BLE001 - delivered to whoever waits
                    job.future.set_exception(exc)


def _load_photos(size: tuple[int, int]) -> list[np.ndarray]:
    """The photos as the camera sees them: each whole, centred on black, at the stream size."""
    paths = [p for p in os.environ.get("PICAMERA2_STANDIN_IMAGES", "").split(os.pathsep) if p]
    if not paths:
        raise RuntimeError("PICAMERA2_STANDIN_IMAGES names no photos")
    photos = []
    for path in paths:
        image = cv2.imread(path)
        if image is None:
            raise RuntimeError(f"cannot read {path}")
        photos.append(letterbox(image, size))
    return photos


def letterbox(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    width, height = size
    scale = min(width / image.shape[1], height / image.shape[0])
    resized = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)),
                         interpolation=cv2.INTER_AREA)
    top, left = (height - resized.shape[0]) // 2, (width - resized.shape[1]) // 2
    return cv2.copyMakeBorder(resized, top, height - resized.shape[0] - top, left,
                              width - resized.shape[1] - left, cv2.BORDER_CONSTANT)
