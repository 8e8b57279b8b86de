"""The capture thread: camera or video file to the drop-oldest frame queue.

It never blocks on the queue and never spins: a camera paces it by blocking in `read()`, a video
file is paced at the configured fps with timed waits. A missing or vanished camera is retried with
capped exponential backoff and reported once per state change, not once per failed read.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from pidaemon import picamera2_source
from pidaemon.config import CameraConfig
from pidaemon.eventlog import emit
from pidaemon.framequeue import DropOldestQueue, QueueClosed
from pidaemon.preprocess import Normalizer, crop_and_resize, is_valid_frame
from pidaemon.worker import Worker

if TYPE_CHECKING:
    import torch

BACKOFF_FIRST = 0.5
BACKOFF_MAX = 10.0
READ_TIMEOUT_MS = 1000  # a network read returns within this even when the camera stalls
OPEN_TIMEOUT_MS = 5000
MAX_WAIT = 0.5  # the longest the loop sleeps, so stop and heartbeat stay responsive


@dataclass
class Frame:
    seq: int
    captured_at: float  # time.monotonic() just after the frame arrived
    batch: torch.Tensor  # 1x3x224x224 normalised RGB: the inference thread only runs the model


def source_kind(device: str | int) -> str:
    """`device` (V4L2), `stream` (a network camera URL) or `file` (a video file)."""
    if isinstance(device, int) or str(device).startswith("/dev/"):
        return "device"
    if "://" in str(device):
        return "stream"
    return "file"


def choose_kind(config: CameraConfig) -> str:
    """`camera.backend` applied: `picamera2`, or what `source_kind` says unless forced."""
    if picamera2_source.wants_picamera2(config):
        return "picamera2"
    kind = source_kind(config.device)
    if config.backend == "v4l2":
        return "device"
    if config.backend == "file" and kind == "device":
        return "file"
    return kind


def describe_fourcc(code: float) -> str:
    value = int(code)
    chars = "".join(chr((value >> (8 * i)) & 0xFF) for i in range(4))
    return chars.strip("\0 ") or "unknown"


class Capture:
    """One open camera or video file, with what it actually granted."""

    def __init__(self, config: CameraConfig) -> None:
        self.config = config
        self.device = config.device
        self.kind = choose_kind(config)
        self.live = self.kind != "file"  # live sources pace themselves; files are paced here
        self.granted = ""
        self._cap: Any = None

    def open(self) -> None:
        """Open the source or raise OSError with a reason a user can act on."""
        config = self.config
        if self.kind == "picamera2":
            camera = picamera2_source.Picamera2Capture.open(config)
            self.granted, self.grant_fields = camera.granted, camera.grant_fields
            self.backend = "picamera2"
            self._cap = camera
            return
        if self.kind == "device":
            if isinstance(self.device, str) and not os.path.exists(self.device):
                raise OSError(f"{self.device} does not exist")
            # OpenCV's V4L2 backend refuses the timeout properties (it fails to open with
            # them); its select() timeout comes from OPENCV_VIDEOIO_V4L_SELECT_TIMEOUT (cli.py).
            cap = cv2.VideoCapture(self.device, cv2.CAP_V4L2)
            if not cap.isOpened():
                raise OSError(f"cannot open {self.device} with V4L2 (busy, or not a capture "
                              f"device; is the user in the 'video' group?)")
            # The pixel format must be set before size and rate, which depend on it.
            if config.fourcc:
                cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*config.fourcc.ljust(4)[:4]))
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, config.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, config.height)
            cap.set(cv2.CAP_PROP_FPS, config.fps)
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
            backend = "V4L2"
        elif self.kind == "stream":
            timeouts = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, OPEN_TIMEOUT_MS,
                        cv2.CAP_PROP_READ_TIMEOUT_MSEC, READ_TIMEOUT_MS]
            cap = cv2.VideoCapture(str(self.device), cv2.CAP_FFMPEG, timeouts)
            if not cap.isOpened():
                raise OSError(f"cannot connect to {self.device} (camera offline, wrong URL, or "
                              f"a format FFmpeg cannot read)")
            backend = cap.getBackendName()
        else:
            if not os.path.exists(str(self.device)):
                raise OSError(f"{self.device} does not exist")
            cap = cv2.VideoCapture(str(self.device))
            if not cap.isOpened():
                raise OSError(f"cannot decode {self.device} (not a video file OpenCV can read)")
            backend = cap.getBackendName()
        width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = cap.get(cv2.CAP_PROP_FPS)
        fourcc = describe_fourcc(cap.get(cv2.CAP_PROP_FOURCC))
        self.granted = f"{width}x{height} {fourcc} at {fps:.1f} fps"
        self.grant_fields = {"width": width, "height": height, "fourcc": fourcc,
                             "camera_fps": round(fps, 2), "backend": backend}
        self.backend = backend
        self._cap = cap

    def read(self) -> tuple[bool, Any]:
        return self._cap.read()

    def release(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class CaptureWorker(Worker):
    """Reads frames, crops them to the model input and puts them on the queue."""

    def __init__(self, config: CameraConfig, frames: DropOldestQueue[Frame],
                 first_seq: int = 1, capture: Capture | None = None) -> None:
        """`capture` stands in for the camera or file `config` names (the bench's simulation)."""
        super().__init__("capture")
        self.config = config
        self.frames = frames
        self.capture = capture or Capture(config)
        self.state = "starting"
        self.status = f"opening {config.device}"
        self.captured = 0
        self.bad_frames = 0
        self.ended = False
        self._seq = first_seq - 1  # sequence numbers go on across camera restarts
        # The model's input is prepared here, overlapping inference on another core.
        self._normalize = Normalizer()
        self._backoff = BACKOFF_FIRST
        self._next_attempt = 0.0
        self._lost_at: float | None = None
        self._last_frame_at = 0.0
        self._next_due = 0.0
        self._interval = 1.0 / config.fps

    @property
    def next_seq(self) -> int:
        return self._seq + 1

    # -- states -------------------------------------------------------------------------------
    def _try_open(self) -> None:
        now = time.monotonic()
        if now < self._next_attempt:
            self.stop_event.wait(min(self._next_attempt - now, MAX_WAIT))
            return
        try:
            self.capture.open()
        except OSError as exc:
            self._failed_to_open(str(exc))
            return
        source = self.config.device
        if self._lost_at is not None:
            emit("camera", f"camera: recovered {source} after {now - self._lost_at:.1f} s: "
                 f"{self.capture.granted}", state="recovered", device=str(source),
                 **self.capture.grant_fields)
        else:
            asked = f"{self.config.width}x{self.config.height} at {self.config.fps:.1f} fps"
            what = f" (asked {asked})" if self.capture.kind in ("device", "picamera2") else ""
            emit("camera", f"camera: opened {source} ({self.capture.backend}): "
                 f"{self.capture.granted}{what}", state="opened", device=str(source),
                 **self.capture.grant_fields)
        self.state = "streaming"
        self.status = f"streaming {source}: {self.capture.granted}"
        self._backoff = BACKOFF_FIRST
        self._lost_at = None
        self._last_frame_at = time.monotonic()
        self._next_due = self._last_frame_at

    def _failed_to_open(self, reason: str) -> None:
        source = self.config.device
        if self.state == "starting":  # a lost camera was reported when it was lost
            self.state = "waiting"
            self._lost_at = time.monotonic()
            emit("camera", f"camera: waiting for {source}: {reason}; retrying with backoff "
                 f"{BACKOFF_FIRST:g} s up to {BACKOFF_MAX:g} s", logging.WARNING,
                 state="waiting", device=str(source), reason=reason)
        self.status = f"waiting for camera {source}: {reason}"
        self._next_attempt = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, BACKOFF_MAX)

    def _lose(self, reason: str) -> None:
        source = self.config.device
        self.capture.release()
        self.state = "lost"
        self._lost_at = time.monotonic()
        self.status = f"camera {source} lost: {reason}; retrying"
        emit("camera", f"camera: lost {source}: {reason}; retrying with backoff "
             f"{BACKOFF_FIRST:g} s up to {BACKOFF_MAX:g} s", logging.WARNING, state="lost",
             device=str(source), reason=reason)
        self._backoff = BACKOFF_FIRST
        self._next_attempt = time.monotonic() + BACKOFF_FIRST

    # -- the loop -----------------------------------------------------------------------------
    def step(self) -> None:
        if self.state != "streaming":
            self._try_open()
            return
        if not self.capture.live:
            now = time.monotonic()
            if now < self._next_due:
                self.stop_event.wait(min(self._next_due - now, MAX_WAIT))
                return
            # A reader that fell behind skips ahead instead of bursting to catch up.
            self._next_due = max(self._next_due + self._interval, now)
        ok, image = self.capture.read()
        now = time.monotonic()
        if not ok:
            self._read_failed(now)
            return
        if not is_valid_frame(image):
            self.bad_frames += 1
            if self.bad_frames == 1:
                emit("camera", f"camera: skipping a bad frame from {self.config.device} "
                     f"({_describe(image)}); bad frames are counted in the stats",
                     logging.WARNING, state="bad_frame", device=str(self.config.device))
            self._check_stall(now)
            return
        self._last_frame_at = now
        self._seq += 1
        self.captured += 1
        try:
            self.frames.put(Frame(self._seq, now, self._normalize(crop_and_resize(image))))
        except QueueClosed:
            self.stop_event.set()

    def _read_failed(self, now: float) -> None:
        if not self.capture.live:
            self.capture.release()
            if self.config.loop:
                self._reopen_file()
                return
            self.ended = True
            self.state = "ended"
            self.status = f"end of {self.config.device}"
            emit("camera", f"camera: end of {self.config.device}", state="ended",
                 device=str(self.config.device))
            self.stop_event.set()
            return
        if self.capture.kind == "device" and not os.path.exists(str(self.config.device)):
            self._lose(f"{self.config.device} disappeared")
            return
        self._check_stall(now)

    def _reopen_file(self) -> None:
        """Start a looping file again; if it has gone, it is lost like a camera."""
        try:
            self.capture.open()
        except OSError as exc:
            self._lose(str(exc))

    def _check_stall(self, now: float) -> None:
        if now - self._last_frame_at >= self.config.stall_timeout:
            self._lose(f"no frame for {self.config.stall_timeout:g} s")
        elif self.capture.live:
            # A failed read can return at once; wait a little rather than spin on it.
            self.stop_event.wait(0.05)

    def teardown(self) -> None:
        self.capture.release()


def _describe(image: object) -> str:
    if isinstance(image, np.ndarray):
        return f"shape {image.shape}, dtype {image.dtype}"
    return f"a {type(image).__name__}"
