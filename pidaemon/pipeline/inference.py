"""The inference thread: freshest frame of each camera in, top-k classes out (per region).

Each round takes the freshest frame of every camera that has one (FairQueues), so every camera
gets its turn under overload. The rows of all those frames (one per frame, or one per region)
that share a model go through it in one batched call, when batching is the faster way
(BatchChooser); else frame by frame.

Each model's thread count is set here (Classifier.set_threads), in the thread that runs it,
because torch's OpenMP setting is per calling thread. Models a reload replaced are closed here
too, between frames, so a frame never runs on a closed model. One failing frame is logged with
its sequence number and skipped; a run of failures means something is broken for good and the
worker gives up so that systemd restarts the daemon.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from pidaemon.errors import WorkerFailed, first_line
from pidaemon.eventlog import emit
from pidaemon.model.base import Classifier
from pidaemon.model.regions import Models
from pidaemon.pipeline.batching import BatchChooser
from pidaemon.pipeline.framequeue import DropOldestQueue, FairQueues, QueueClosed
from pidaemon.pipeline.frames import Frame, RegionResult, Result
from pidaemon.pipeline.snapshot import Counters
from pidaemon.pipeline.worker import Worker


@dataclass
class LiveSettings:
    """Settings a reload changes without restarting the thread."""

    threads: int
    top_k: int
    max_consecutive_errors: int
    batch: BatchChooser = field(default_factory=BatchChooser)


class InferenceWorker(Worker):
    def __init__(self, classifier: Classifier, frames: FairQueues[Frame],
                 results: DropOldestQueue[Result], settings: LiveSettings,
                 models: Models | None = None) -> None:
        """`models`: the main model (key None) and the regions' own; `classifier` alone when
        no region has a model of its own."""
        super().__init__("inference")
        self.classifier = classifier
        self.models: Models = models or {None: classifier}  # replaced whole on a model reload
        self.frames = frames
        self.results = results
        self.settings = settings
        self.processed = 0
        self.failed_frames = 0
        self.busy = False
        self.per_camera: dict[str | None, Counters] = {}  # processed and failed_frames
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
            if self._threads_for[1] and self._threads_for[1] != models:
                self.settings.batch.reset()  # other models: measure batching again
            for classifier in models:
                classifier.set_threads(self.settings.threads)
            self._threads_for = (self.settings.threads, models)

    def step(self) -> None:
        self._close_retired()
        try:
            frames = self.frames.take(timeout=0.5)
        except QueueClosed:
            self.stop_event.set()
            return
        if not frames:
            return
        self._apply_threads()
        self.busy = True
        try:
            chooser = self.settings.batch
            batched = len(frames) > 1 and chooser.batch_now()
            started = time.monotonic()
            for group in ([frames] if batched else [[f] for f in frames]):
                self._infer(group)
            if len(frames) > 1:
                chooser.record(batched, len(frames), time.monotonic() - started)
        finally:
            self.busy = False

    def _infer(self, frames: list[Frame]) -> None:
        started = time.monotonic()
        try:
            answers = self._classify(frames)
        except Exception as exc:  # noqa: BLE001 - counted per frame; a run of them ends it
            for frame in frames:
                self._failed(frame, exc)
            return
        finished = time.monotonic()
        self._consecutive_failures = 0
        inference_ms = (finished - started) * 1000
        for frame, answer in zip(frames, answers, strict=True):
            self.processed += 1
            self._count(frame.camera, Counters(processed=1))
            first = answer[0] if answer else None
            classes, scores = (first.classes, first.scores) if first else ([], [])
            regions = answer if frame.regions else ()
            # The labels of the model that answered: a reload may have swapped it since.
            labels = first.labels if first else None
            result = Result(frame.seq, frame.captured_at, finished, inference_ms, classes,
                            scores, regions, frame.camera, frame.images, labels)
            try:
                self.results.put(result)
            except QueueClosed:
                self.stop_event.set()

    def _count(self, camera: str | None, counted: Counters) -> None:
        self.per_camera[camera] = self.per_camera.get(camera, Counters()) + counted

    def _failed(self, frame: Frame, exc: Exception) -> None:
        self.failed_frames += 1
        self._count(frame.camera, Counters(failed_frames=1))
        self._consecutive_failures += 1
        where = {} if frame.camera is None else {"camera": frame.camera}
        emit("inference_error", f"inference failed on frame seq={frame.seq}"
             f"{'' if frame.camera is None else ' of ' + frame.camera}: {first_line(exc)}",
             logging.ERROR, seq=frame.seq, **where)
        limit = self.settings.max_consecutive_errors
        if self._consecutive_failures > limit:
            raise WorkerFailed(f"inference failed on {self._consecutive_failures} frames in "
                               f"a row (limit inference.max_consecutive_errors={limit})"
                               ) from exc

    def _classify(self, frames: list[Frame]) -> list[tuple[RegionResult, ...]]:
        """Every row of every frame, one batched call per model.

        A row is a whole frame (name "") or a region; a region whose model a reload removed is
        skipped.
        """
        import torch

        models = self.models
        groups: dict[object, list[tuple[int, int]]] = {}  # model -> (frame, row)
        for f, frame in enumerate(frames):
            keys = [r.model for r in frame.regions] if frame.regions else [None]
            for row, key in enumerate(keys):
                groups.setdefault(key, []).append((f, row))
        answers: list[dict[int, RegionResult]] = [{} for _ in frames]
        for key, rows in groups.items():
            classifier = models.get(key)  # type: ignore[call-overload]
            if classifier is None:
                continue
            whole = len(frames) == 1 and len(rows) == len(frames[0].batch)
            batch = frames[0].batch if whole else torch.cat(
                [frames[f].batch[row:row + 1] for f, row in rows])
            for (f, row), (classes, scores) in zip(
                    rows, classifier.top_k_batch(batch, self.settings.top_k), strict=True):
                regions = frames[f].regions
                name = regions[row].name if regions else ""
                answers[f][row] = RegionResult(name, classes, scores, classifier.labels)
        return [tuple(a[row] for row in sorted(a)) for a in answers]
