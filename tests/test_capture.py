"""The capture thread's frame checks: a camera driver that hands out broken frames (empty,
wrong shape, wrong type) among good ones. The driver is a stand-in; the thread is real."""

import time

import cv2
import numpy as np

from pidaemon.config import CameraConfig
from pidaemon.pipeline.capture import CaptureWorker
from pidaemon.pipeline.framequeue import DropOldestQueue
from pidaemon.pipeline.frames import Frame
from pidaemon.sources import CameraState, FrameSource, Grant

from .conftest import IMAGES

GOOD = cv2.imread(str(IMAGES / "coffee.png"))
BROKEN = [np.zeros((0, 0, 3), np.uint8), np.zeros((480, 640), np.uint8),
          np.zeros((480, 640, 3), np.float32), None]


class FlakyDriver(FrameSource):
    """A live camera whose reads alternate between good and broken frames."""

    def __init__(self) -> None:
        super().__init__("/dev/null")
        self.reads = [GOOD, BROKEN[0], GOOD, BROKEN[1], BROKEN[2], GOOD, BROKEN[3], GOOD]

    def open(self) -> None:
        self.grant = Grant("640x480 test", {}, "test")

    def read(self):
        time.sleep(0.01)
        if self.reads:
            frame = self.reads.pop(0)
            return frame is not None, frame
        return True, GOOD

    def release(self) -> None:
        pass


def test_broken_frames_are_skipped_and_counted():
    config = CameraConfig(device="/dev/null", stall_timeout=30)  # exists: a failed read is no loss
    frames: DropOldestQueue[Frame] = DropOldestQueue(64)
    worker = CaptureWorker(FlakyDriver(), config, frames)
    worker.start()
    deadline = time.monotonic() + 10
    while worker.captured < 6 and time.monotonic() < deadline:
        time.sleep(0.01)
    worker.stop()
    worker.join(2)
    assert worker.error is None and worker.state is CameraState.STREAMING
    assert worker.bad_frames == 3, "empty, 2-D and float frames; a failed read is not a frame"
    queued = []
    while (frame := frames.get(0)) is not None:
        queued.append(frame)
    assert len(queued) == worker.captured >= 6
    assert [f.seq for f in queued] == list(range(1, len(queued) + 1))
    assert all(f.batch.shape == (1, 3, 224, 224) for f in queued)
