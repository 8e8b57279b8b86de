"""The inference thread: freshest frame in, top-k classes out (for each region of it).

The regions of a frame that share a model go through it in one batched call.

Each model's thread count is set here (Classifier.set_threads), in the thread that runs it,
because torch's OpenMP setting is per calling thread. Models a reload replaced are closed here
too, between frames, so a frame never runs on a closed model. One failing frame is logged with
its sequence number and skipped; a run of failures means something is broken for good and the
worker gives up so that systemd restarts the daemon.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from pidaemon.errors import WorkerFailed, first_line
from pidaemon.eventlog import emit
from pidaemon.model.base import Classifier
from pidaemon.model.regions import Models
from pidaemon.pipeline.framequeue import DropOldestQueue, QueueClosed
from pidaemon.pipeline.frames import Frame, RegionResult, Result
from pidaemon.pipeline.worker import Worker


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
        self.models: Models = {None: classifier}  # replaced whole when models are reloaded
        self.frames = frames
        self.results = results
        self.settings = settings
        self.processed = 0
        self.failed_frames = 0
        self.busy = False
        self._consecutive_failures = 0
        self._threads_for: tuple[int, list[Classifier]] = (0, [])
        self._retired: list[Classifier] = []

    def setup(self) -> None:
        self._apply_threads()

    def retire(self, models: list[Classifier]) -> None:
        """Close `models` before the next frame (they were replaced by a reload)."""
        self._retired.extend(models)

    def close_models(self) -> None:
        """Close every model this worker holds or retired; once the thread has stopped."""
        self._close_retired()
        for classifier in {id(c): c for c in self.models.values()}.values():
            classifier.close()

    def _close_retired(self) -> None:
        while self._retired:
            self._retired.pop().close()

    def _apply_threads(self) -> None:
        """Also after a reload: loading a model resets torch's process-wide qnnpack pool."""
        models = list({id(c): c for c in self.models.values()}.values())
        if (self.settings.threads, models) != self._threads_for:
            for classifier in models:
                classifier.set_threads(self.settings.threads)
            self._threads_for = (self.settings.threads, models)

    def step(self) -> None:
        self._close_retired()
        try:
            frame = self.frames.get(timeout=0.5)
        except QueueClosed:
            self.stop_event.set()
            return
        if frame is None:
            return
        self._apply_threads()
        self.busy = True
        try:
            self._infer(frame)
        finally:
            self.busy = False

    def _infer(self, frame: Frame) -> None:
        started = time.monotonic()
        try:
            if frame.regions:
                regions = self._classify_regions(frame)
                classes, scores = (regions[0].classes, regions[0].scores) if regions else ([], [])
            else:
                regions = ()
                classes, scores = self.classifier.top_k(frame.batch, self.settings.top_k)
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
                        classes, scores, regions)
        try:
            self.results.put(result)
        except QueueClosed:
            self.stop_event.set()

    def _classify_regions(self, frame: Frame) -> tuple[RegionResult, ...]:
        """One batched call per model; a region whose model a reload removed is skipped."""
        models = self.models
        rows: dict[int, RegionResult] = {}
        groups: dict[object, list[int]] = {}
        for row, region in enumerate(frame.regions):
            groups.setdefault(region.model, []).append(row)
        for key, indices in groups.items():
            classifier = models.get(key)  # type: ignore[call-overload]
            if classifier is None:
                continue
            batch = frame.batch if len(indices) == len(frame.regions) else frame.batch[indices]
            for row, (classes, scores) in zip(
                    indices, classifier.top_k_batch(batch, self.settings.top_k), strict=True):
                rows[row] = RegionResult(frame.regions[row].name, classes, scores,
                                         classifier.labels)
        return tuple(rows[row] for row in sorted(rows))
