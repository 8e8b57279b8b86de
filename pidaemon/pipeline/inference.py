"""The inference thread: freshest frame in, top-k classes out.

Torch's intra-op thread count is set here, in the thread that runs the model, because the
OpenMP setting is per calling thread. One failing frame is logged with its sequence number and
skipped; a run of failures means something is broken for good and the worker gives up so that
systemd restarts the daemon.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass

from pidaemon.errors import WorkerFailed, first_line
from pidaemon.eventlog import emit
from pidaemon.model.classifier import Classifier
from pidaemon.pipeline.framequeue import DropOldestQueue, QueueClosed
from pidaemon.pipeline.frames import Frame, Result
from pidaemon.pipeline.worker import Worker

FAULT_ENV = "PI_INFER_FAULT"  # test hook: "hang-inference" hangs this thread after 3 frames
HANG_AFTER_FRAMES = 3


@dataclass
class LiveSettings:
    """Settings a reload changes without restarting the thread."""

    threads: int
    top_k: int
    max_consecutive_errors: int


class InferenceWorker(Worker):
    def __init__(self, classifier: Classifier, frames: DropOldestQueue[Frame],
                 results: DropOldestQueue[Result], settings: LiveSettings) -> None:
        super().__init__("inference")
        self.classifier = classifier
        self.frames = frames
        self.results = results
        self.settings = settings
        self.processed = 0
        self.failed_frames = 0
        self.busy = False
        self._consecutive_failures = 0
        self._threads_for: tuple[int, Classifier | None] = (0, None)
        self._hang = os.environ.get(FAULT_ENV) == "hang-inference"

    def setup(self) -> None:
        self._apply_threads()

    def _apply_threads(self) -> None:
        """Also after a reload: loading a model resets torch's process-wide qnnpack pool."""
        import torch

        wanted = (self.settings.threads, self.classifier)
        if wanted != self._threads_for:
            torch.set_num_threads(self.settings.threads)
            self._threads_for = wanted

    def step(self) -> None:
        try:
            frame = self.frames.get(timeout=0.5)
        except QueueClosed:
            self.stop_event.set()
            return
        if frame is None:
            return
        self._apply_threads()
        if self._hang and self.processed >= HANG_AFTER_FRAMES:
            emit("fault", "fault hook: hanging the inference thread", logging.WARNING)
            threading.Event().wait()
        self.busy = True
        try:
            self._infer(frame)
        finally:
            self.busy = False

    def _infer(self, frame: Frame) -> None:
        classifier = self.classifier  # a reload may swap it meanwhile
        started = time.monotonic()
        try:
            classes, scores = classifier.top_k(frame.batch, self.settings.top_k)
        except Exception as exc:
            self.failed_frames += 1
            self._consecutive_failures += 1
            emit("inference_error", f"inference failed on frame seq={frame.seq}: "
                 f"{first_line(exc)}", logging.ERROR, seq=frame.seq)
            limit = self.settings.max_consecutive_errors
            if self._consecutive_failures > limit:
                raise WorkerFailed(f"inference failed on {self._consecutive_failures} frames in "
                                   f"a row (limit inference.max_consecutive_errors={limit})"
                                   ) from exc
            return
        finished = time.monotonic()
        self._consecutive_failures = 0
        self.processed += 1
        result = Result(frame.seq, frame.captured_at, finished, (finished - started) * 1000,
                        classes, scores, frame.image, classifier.labels)
        try:
            self.results.put(result)
        except QueueClosed:
            self.stop_event.set()
