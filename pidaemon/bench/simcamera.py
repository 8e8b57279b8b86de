"""A simulated V4L2 camera, so the bench can show what a real driver does to a slow reader.

A V4L2 driver fills a ring of buffers (OpenCV asks for 4) on the sensor's own clock. `read()`
hands the application the oldest filled buffer and blocks while none is ready; the buffer it
returned goes back to the driver at the next `read()`. When the reader falls behind, every buffer
is full and new frames are dropped, so a slow loop keeps reading frames several periods old.
Each frame keeps its true capture time, which is what frame age is measured against.

The sensor's clock is computed rather than run: frame k is captured at `start + k / fps`, and
each `read()` first brings the ring up to date. That is exactly what a timer thread would do,
without a thread that wakes up to a thousand times a second and competes for the GIL with the
pipeline being measured, which a real camera does not.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from pidaemon.sources import FrameSource, Grant

DRIVER_BUFFERS = 4


@dataclass
class SimFrame:
    seq: int
    captured_at: float  # time.monotonic() when the sensor took it
    image: np.ndarray


READ_TIMEOUT = 1.0  # like a V4L2 select() timeout


class SimulatedCamera(FrameSource):
    """Serves `images` in turn at `fps`, through a ring of `buffers` driver buffers.

    `captured_at` lists the true capture time of every frame returned, in read order; the
    capture thread numbers frames in that same order, so result seq n was captured at
    `captured_at[n - 1]`.
    """

    live = True  # reads block on the camera's clock: no file pacing

    def __init__(self, images: list[np.ndarray], fps: float,
                 buffers: int = DRIVER_BUFFERS) -> None:
        super().__init__("simulated")
        self.images = images
        self.period = 1.0 / fps
        self.buffers = buffers
        self.captured_at: list[float] = []
        self.last: SimFrame | None = None
        self.ring_dropped = 0  # frames the sensor took while every buffer was full
        self._ready: deque[SimFrame] = deque()
        self._held = False
        self._start = 0.0
        self._ticks = 0  # frames the sensor has taken, as of the last read

    def open(self) -> None:
        height, width = self.images[0].shape[:2]
        fps = 1.0 / self.period
        self.grant = Grant(f"{width}x{height} BGR3 at {fps:g} fps",
                           {"width": width, "height": height, "fourcc": "BGR3",
                            "camera_fps": fps, "backend": "simulated"}, "simulated")
        self._start = time.monotonic()
        self._ticks = 0
        self._ready.clear()
        self._held = False

    def _advance(self, now: float) -> None:
        """Let the sensor take every frame due by `now`: into a free buffer, or dropped."""
        while (due := self._start + self._ticks * self.period) <= now:
            self._ticks += 1
            if len(self._ready) + self._held < self.buffers:
                image = self.images[(self._ticks - 1) % len(self.images)]
                self._ready.append(SimFrame(self._ticks, due, image))
            else:
                self.ring_dropped += 1

    @property
    def produced(self) -> int:
        """Frames the sensor has taken by now (safe to read from another thread)."""
        return int((time.monotonic() - self._start) / self.period) + 1

    def read(self) -> tuple[bool, np.ndarray | None]:
        self._advance(time.monotonic())
        self._held = False  # the previous buffer is queued to the driver again
        if not self._ready:
            due = self._start + self._ticks * self.period
            wait = due - time.monotonic()
            if wait > READ_TIMEOUT:
                time.sleep(READ_TIMEOUT)
                return False, None
            time.sleep(max(0.0, wait))
            self._advance(max(time.monotonic(), due))
        frame = self._ready.popleft()
        self._held = True
        self.last = frame
        self.captured_at.append(frame.captured_at)
        return True, frame.image

    def release(self) -> None:
        self._ready.clear()
        self._held = False
