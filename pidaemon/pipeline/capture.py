"""The capture thread: a frame source to the drop-oldest frame queue.

It never blocks on the queue and never spins: a camera paces it by blocking in `read()`, a video
file is paced at the configured fps with timed waits. A missing or vanished camera is retried with
capped exponential backoff and reported once per state change, not once per failed read.

Opening runs in a helper thread (Opening): a FIFO nobody writes, or a hung device, blocks in
open() for ever, and neither READY nor a stop may wait for it. An open still running after the
source's `open_patience` is reported as waiting, and waited for; no second attempt starts beside it.
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np

from pidaemon.config import CameraConfig
from pidaemon.config.regions import Region
from pidaemon.eventlog import emit
from pidaemon.model.preprocess import Normalizer, crop_and_resize, crop_box, is_valid_frame
from pidaemon.pipeline.framequeue import DropOldestQueue, QueueClosed
from pidaemon.pipeline.frames import Frame
from pidaemon.pipeline.tap import FrameTap
from pidaemon.pipeline.worker import Worker
from pidaemon.sources import CameraState, FrameSource

BACKOFF_FIRST = 0.5
BACKOFF_MAX = 10.0
MAX_WAIT = 0.5  # the longest the loop sleeps, so stop and heartbeat stay responsive


class Opening(threading.Thread):
    """One `source.open()` in a thread of its own; a stopped worker leaves it to clean up."""

    def __init__(self, source: FrameSource) -> None:
        super().__init__(name="capture-open", daemon=True)
        self.source = source
        self.started_at = time.monotonic()
        self.error: OSError | None = None  # the reason the source gives
        self.failure: BaseException | None = None  # anything else: a bug, raised in capture
        self.reported = False
        self._lock = threading.Lock()
        self._done = False
        self._abandoned = False

    def run(self) -> None:
        try:
            self.source.open()
        except OSError as exc:
            self.error = exc
        except BaseException as exc:  # noqa: BLE001 - handed to the capture thread
            self.failure = exc
        with self._lock:
            self._done = True
            if self._abandoned:
                self.source.release()

    def abandon(self) -> bool:
        """Leave a running open to release what it opens; False if it has already finished."""
        with self._lock:
            self._abandoned = not self._done
            return self._abandoned


class CaptureWorker(Worker):
    """Reads frames, crops them (whole or each region) to the model input, queues them."""

    def __init__(self, source: FrameSource, config: CameraConfig, frames: DropOldestQueue[Frame],
                 first_seq: int = 1, regions: tuple[Region, ...] = (),
                 camera: str | None = None, tap: FrameTap | None = None,
                 keep_images: bool = False) -> None:
        super().__init__("capture" if camera is None else f"capture {camera}")
        self.camera = camera  # the name in `cameras:`, on every frame and camera event
        self._tag = "camera" if camera is None else f"camera {camera}"
        self._who = {} if camera is None else {"camera": camera}
        self.regions = regions  # replaced whole by a reload, read once per frame
        self.tap = tap or FrameTap()
        self.source = source
        self.config = config
        self.frames = frames
        self.keep_images = keep_images  # the model input goes along for collect:
        self.state = CameraState.STARTING
        self.status = f"opening {config.device}"
        self.captured = 0
        self.bad_frames = 0
        self._seq = first_seq - 1  # sequence numbers go on across camera restarts
        # The model's input is prepared here, overlapping inference on another core.
        self._normalize = Normalizer()
        self._backoff = BACKOFF_FIRST
        self._next_attempt = 0.0
        self._lost_at: float | None = None
        self._last_frame_at = 0.0
        self._next_due = 0.0
        self._interval = 1.0 / config.fps
        self._opening: Opening | None = None

    @property
    def next_seq(self) -> int:
        return self._seq + 1

    @property
    def ended(self) -> bool:
        return self.state is CameraState.ENDED

    # -- states -------------------------------------------------------------------------------
    def _try_open(self) -> None:
        opening = self._opening
        if opening is None:
            now = time.monotonic()
            if now < self._next_attempt:
                self.stop_event.wait(min(self._next_attempt - now, MAX_WAIT))
                return
            self._opening = opening = Opening(self.source)
            opening.start()
        opening.join(MAX_WAIT)
        if opening.is_alive():
            self._still_opening(opening)
            return
        self._opening = None
        if opening.failure is not None:
            raise opening.failure
        if opening.error is not None:
            self._failed_to_open(str(opening.error))
            return
        now = time.monotonic()
        device, grant = self.config.device, self.source.grant
        if self._lost_at is not None:
            emit("camera", f"{self._tag}: recovered {device} after {now - self._lost_at:.1f} s: "
                 f"{grant.text}", state="recovered", device=str(device), **self._who,
                 **grant.fields)
        else:
            asked = f"{self.config.width}x{self.config.height} at {self.config.fps:.1f} fps"
            what = f" (asked {asked})" if self.source.negotiates else ""
            emit("camera", f"{self._tag}: opened {device} ({grant.backend}): {grant.text}{what}",
                 state="opened", device=str(device), **self._who, **grant.fields)
        self.state = CameraState.STREAMING
        self.status = f"streaming {device}: {grant.text}"
        self._backoff = BACKOFF_FIRST
        self._lost_at = None
        self._last_frame_at = time.monotonic()
        self._next_due = self._last_frame_at

    def _still_opening(self, opening: Opening) -> None:
        """An open that takes too long counts as waiting (READY goes on), reported once."""
        elapsed = time.monotonic() - opening.started_at
        if elapsed < self.source.open_patience:
            return
        device = self.config.device
        reason = (f"opening it has not finished after {elapsed:.0f} s (a FIFO that nobody "
                  f"writes, or a device that does not answer)")
        self.status = f"waiting for camera {device}: {reason}"
        if opening.reported:
            return
        opening.reported = True
        if self.state is CameraState.STARTING:
            self.state = CameraState.WAITING
            self._lost_at = time.monotonic()
        emit("camera", f"camera: waiting for {device}: opening it has not finished after "
             f"{self.source.open_patience:g} s (a FIFO that nobody writes, or a device that does "
             f"not answer); still waiting for it", logging.WARNING, state="waiting",
             device=str(device), reason="open does not finish")

    def _failed_to_open(self, reason: str) -> None:
        device = self.config.device
        if self.state is CameraState.STARTING:  # a lost camera was reported when it was lost
            self.state = CameraState.WAITING
            self._lost_at = time.monotonic()
            emit("camera", f"{self._tag}: waiting for {device}: {reason}; retrying with backoff "
                 f"{BACKOFF_FIRST:g} s up to {BACKOFF_MAX:g} s", logging.WARNING,
                 state="waiting", device=str(device), **self._who, reason=reason)
        self.status = f"waiting for camera {device}: {reason}"
        self._next_attempt = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, BACKOFF_MAX)

    def _lose(self, reason: str) -> None:
        device = self.config.device
        self.source.release()
        self.state = CameraState.LOST
        self._lost_at = time.monotonic()
        self.status = f"camera {device} lost: {reason}; retrying"
        emit("camera", f"{self._tag}: lost {device}: {reason}; retrying with backoff "
             f"{BACKOFF_FIRST:g} s up to {BACKOFF_MAX:g} s", logging.WARNING, state="lost",
             device=str(device), **self._who, reason=reason)
        self._backoff = BACKOFF_FIRST
        self._next_attempt = time.monotonic() + BACKOFF_FIRST

    # -- the loop -----------------------------------------------------------------------------
    def step(self) -> None:
        if self.state is not CameraState.STREAMING:
            self._try_open()
            return
        if not self.source.live:
            now = time.monotonic()
            if now < self._next_due:
                self.stop_event.wait(min(self._next_due - now, MAX_WAIT))
                return
            # A reader that fell behind skips ahead instead of bursting to catch up.
            self._next_due = max(self._next_due + self._interval, now)
        ok, image = self.source.read()
        now = time.monotonic()
        if not ok:
            self._read_failed(now)
            return
        if not is_valid_frame(image):
            self.bad_frames += 1
            if self.bad_frames == 1:
                emit("camera", f"{self._tag}: skipping a bad frame from {self.config.device} "
                     f"({_describe(image)}); bad frames are counted in the stats",
                     logging.WARNING, state="bad_frame", device=str(self.config.device),
                     **self._who)
            self._check_stall(now)
            return
        self._last_frame_at = now
        self._seq += 1
        self.captured += 1
        self.tap.offer(self._seq, image)
        try:
            self.frames.put(self._prepare(image, now))
        except QueueClosed:
            self.stop_event.set()

    def _prepare(self, image: np.ndarray, now: float) -> Frame:
        regions = self.regions
        if not regions:
            rgb = crop_and_resize(image)
            return Frame(self._seq, now, self._normalize(rgb), camera=self.camera,
                         images=(rgb,) if self.keep_images else ())
        crops = [crop_box(image, region.box) for region in regions]
        return Frame(self._seq, now, self._normalize.many(crops), regions, self.camera,
                     tuple(crops) if self.keep_images else ())

    def _read_failed(self, now: float) -> None:
        if not self.source.live:
            self.source.release()
            if self.config.loop:
                self._reopen_file()
                return
            self.state = CameraState.ENDED
            self.status = f"end of {self.config.device}"
            emit("camera", f"{self._tag}: end of {self.config.device}", state="ended",
                 device=str(self.config.device), **self._who)
            self.stop_event.set()
            return
        reason = self.source.gone()
        if reason is not None:
            self._lose(reason)
            return
        self._check_stall(now)

    def _reopen_file(self) -> None:
        """Start a looping file again; if it has gone, it is lost like a camera."""
        try:
            self.source.open()
        except OSError as exc:
            self._lose(str(exc))

    def _check_stall(self, now: float) -> None:
        if now - self._last_frame_at >= self.config.stall_timeout:
            self._lose(f"no frame for {self.config.stall_timeout:g} s")
        elif self.source.live:
            # A failed read can return at once; wait a little rather than spin on it.
            self.stop_event.wait(0.05)

    def teardown(self) -> None:
        if self._opening is None or not self._opening.abandon():
            self.source.release()


def _describe(image: object) -> str:
    if isinstance(image, np.ndarray):
        return f"shape {image.shape}, dtype {image.dtype}"
    return f"a {type(image).__name__}"
