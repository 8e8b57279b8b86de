"""The Pipeline: a capture thread per camera, one inference thread, one results thread.

It owns everything that moves frames: a drop-oldest queue per camera (FairQueues), the workers
and their start and stop order, the counters (capture totals go on across camera restarts),
camera restarts, additions and removals, model swaps and liveness. The service keeps signals,
systemd and reload; the bench builds the very same Pipeline around simulated cameras.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping

from pidaemon.config import CameraConfig, Config
from pidaemon.config.schema import NamedCamera
from pidaemon.cpus import resolve_threads
from pidaemon.errors import WorkerFailed, first_line
from pidaemon.eventlog import emit
from pidaemon.model.base import Classifier
from pidaemon.model.regions import Models
from pidaemon.pipeline.capture import CaptureWorker
from pidaemon.pipeline.feed import JOIN_TIMEOUT, CameraFeed
from pidaemon.pipeline.framequeue import DropOldestQueue, FairQueues
from pidaemon.pipeline.frames import Frame, Result
from pidaemon.pipeline.inference import InferenceWorker, LiveSettings
from pidaemon.pipeline.results import ResultsWorker, Window
from pidaemon.pipeline.sink import Sink
from pidaemon.pipeline.snapshot import Counters, ModelInfo, RegionInfo, Snapshot, Stats
from pidaemon.pipeline.tap import FrameTap
from pidaemon.pipeline.worker import Worker
from pidaemon.sources import FrameSource

RESULTS_BUFFER = 256
NO_WINDOW = Window(0.0, None, None)
NO_STATS = Stats(0.0, None, None, Counters(), None, None)  # before the first window


class Pipeline:
    def __init__(self, classifier: Classifier, config: Config,
                 sources: FrameSource | Mapping[str | None, FrameSource], sinks: list[Sink],
                 models: Models | None = None, tap: FrameTap | None = None) -> None:
        """`sources`: one per camera of `config.feeds()`, by name (a bare one: `camera:`).
        `tap` shows the first camera's newest image to the live page."""
        self.classifier = classifier
        self.models: Models = models or {None: classifier}  # the classifiers regions use
        self.tap = tap or FrameTap()
        self.sinks = sinks
        self.frames: FairQueues[Frame] = FairQueues(config.queue.size)
        self.results: DropOldestQueue[Result] = DropOldestQueue(RESULTS_BUFFER)
        self.settings = LiveSettings(resolve_threads(config.inference.threads)[0],
                                     config.model.top_k,
                                     config.inference.max_consecutive_errors)
        self._keep_images = config.collect.directory is not None
        if not isinstance(sources, Mapping):
            sources = {config.feeds()[0].name: sources}
        feeds = config.feeds()
        self.feeds: dict[str | None, CameraFeed] = {
            named.name: CameraFeed(named, sources[named.name], self.frames.add(named.name),
                                   self.tap if named is feeds[0] else None, self._keep_images)
            for named in feeds}
        self.inference = InferenceWorker(classifier, self.frames, self.results, self.settings,
                                         self.models)
        self.results_worker = ResultsWorker(self.results, config.output.interval, self)
        self._retired = Counters()  # totals of cameras since removed
        self._stats: Stats | None = None

    @property
    def capture(self) -> CaptureWorker:
        """The first camera's capture thread (the only one without `cameras:`)."""
        return next(iter(self.feeds.values())).capture

    @property
    def named(self) -> bool:
        return None not in self.feeds

    @property
    def workers(self) -> list[Worker]:
        return [*(f.capture for f in self.feeds.values()), self.inference, self.results_worker]

    # -- start and stop -----------------------------------------------------------------------
    def start(self) -> None:
        """Consumers first, so the first frame finds its way through."""
        self._announce_regions()
        self.results_worker.start()
        self.inference.start()
        for feed in self.feeds.values():
            feed.capture.start()

    def wait_for_capture_attempt(self, timeout: float) -> None:
        """Until every capture thread has tried its source once (READY's promise)."""
        deadline = time.monotonic() + timeout
        while (not all(f.attempted for f in self.feeds.values())
               and time.monotonic() < deadline):
            time.sleep(0.01)

    def stop(self, timeout: float = JOIN_TIMEOUT) -> None:
        """Producers first; the results thread delivers every result already made, then ends.

        Each thread gets `timeout`; one that hangs is left behind with a warning.
        """
        self.frames.close()
        captures = [f.capture for f in self.feeds.values()]
        for worker in captures:
            worker.stop()
        for worker in (*captures, self.inference):
            worker.stop()
            self._join(worker, timeout)
        self.results.close()  # the results thread drains it, then ends on QueueClosed
        self._join(self.results_worker, timeout)
        self.results_worker.stop()

    def close(self) -> None:
        """Release the models (the xnnpack engine's child processes), once stopped."""
        self.inference.close_models()

    @staticmethod
    def _join(worker: Worker, timeout: float) -> None:
        if worker.is_alive():
            worker.join(timeout)
        if worker.is_alive():
            emit("lifecycle", f"the {worker.name} thread did not stop within {timeout:g} s; "
                 f"exiting without it", logging.WARNING)

    # -- changes while running ----------------------------------------------------------------
    def restart_capture(self, source: FrameSource, config: CameraConfig,
                        camera: str | None = None) -> None:
        """Reopen one camera; the others keep streaming."""
        self.feeds[camera].restart(source, config)

    def set_cameras(self, config: Config, make_source: Callable[[CameraConfig], FrameSource],
                    changed: set[str | None]) -> None:
        """Cameras of `config` added, removed, or (named in `changed`) reopened, alone."""
        wanted = {named.name: named for named in config.feeds()}
        for name in [n for n in self.feeds if n not in wanted]:
            feed = self.feeds.pop(name)
            feed.capture.stop()
            feed.capture.join(JOIN_TIMEOUT)
            self.frames.remove(name)
            self._retired = self._retired + feed.counters(0, 0)
        for name, named in wanted.items():
            if name not in self.feeds:
                self._add(named, make_source(named.camera))
            elif name in changed:
                self.feeds[name].restart(make_source(named.camera), named.camera)

    def _add(self, named: NamedCamera, source: FrameSource) -> None:
        feed = CameraFeed(named, source, self.frames.add(named.name),
                          keep_images=self._keep_images)
        self.feeds[named.name] = feed
        feed.capture.start()

    def swap_models(self, models: Models) -> None:
        """The main model (key None) and the region models, replaced together; the inference
        thread closes the old ones that are not kept."""
        kept = {id(c) for c in models.values()}
        old = [c for c in {id(c): c for c in self.models.values()}.values() if id(c) not in kept]
        self.classifier = self.inference.classifier = models[None]
        self.models = self.inference.models = models
        self.inference.retire(old)

    def apply_live(self, config: Config) -> None:
        """Keys a reload applies without restarting anything."""
        self.settings.threads = resolve_threads(config.inference.threads)[0]
        self.settings.top_k = config.model.top_k
        self.settings.max_consecutive_errors = config.inference.max_consecutive_errors
        self.results_worker.interval = config.output.interval
        self.frames.resize(config.queue.size)
        for sink in self.sinks:
            sink.reconfigure(config)
        for named in config.feeds():
            if named.name in self.feeds:
                self.feeds[named.name].set_regions(named.regions)
        self._announce_regions()

    def region_infos(self) -> tuple[RegionInfo, ...]:
        return tuple(RegionInfo(r.name, r.box, self.models[r.model].labels, feed.name)
                     for feed in self.feeds.values() for r in feed.regions
                     if r.model in self.models)

    def _announce_regions(self) -> None:
        infos = self.region_infos()
        for sink in self.sinks:
            sink.on_regions(infos)

    # -- state --------------------------------------------------------------------------------
    def counters(self) -> Counters:
        total = self._retired
        for feed in self.feeds.values():
            total = total + feed.counters(0, 0)
        return total + Counters(processed=self.inference.processed,
                                failed_frames=self.inference.failed_frames)

    def _feed_counters(self, feed: CameraFeed) -> Counters:
        counted = self.inference.per_camera.get(feed.name, Counters())
        return feed.counters(counted.processed, counted.failed_frames)

    def snapshot(self) -> Snapshot:
        """The whole pipeline; with `cameras:`, each camera's snapshot in `cameras`."""
        stats = dataclasses.replace(self._stats or NO_STATS, counters=self.counters())
        sources = tuple(f.source_status() for f in self.feeds.values())
        parts = tuple(self._camera_snapshot(f) for f in self.feeds.values()) if self.named else ()
        return Snapshot(sources, self._model_info(), stats, self.results_worker.last,
                        cameras=parts)

    def _camera_snapshot(self, feed: CameraFeed) -> Snapshot:
        stats = dataclasses.replace(feed.stats or NO_STATS, counters=self._feed_counters(feed))
        return Snapshot((feed.source_status(),), self._model_info(), stats, feed.last,
                        camera=feed.name)

    def _model_info(self) -> ModelInfo:
        classifier = self.classifier
        return ModelInfo(classifier.description, classifier.engine, classifier.labels)

    def alive(self, window: float) -> bool:
        """Every running worker, every camera's capture thread too, made progress lately."""
        now = time.monotonic()
        return all(w.stale_for(now) < window for w in self.workers if w.is_alive())

    def raise_if_dead(self) -> None:
        for worker in self.workers:
            if worker.error is not None:
                raise WorkerFailed(f"the {worker.name} thread failed: {first_line(worker.error)}"
                                   ) from worker.error
            if not worker.is_alive() and not worker.stop_event.is_set():
                raise WorkerFailed(f"the {worker.name} thread ended unexpectedly")

    @property
    def finished(self) -> bool:
        """Every camera is a video file without loop that has ended, every frame classified."""
        return (all(f.capture.ended for f in self.feeds.values()) and len(self.frames) == 0
                and not self.inference.busy)

    # -- the results thread's listener --------------------------------------------------------
    def on_result(self, result: Result) -> None:
        labels = result.labels or self.classifier.labels
        for sink in self.sinks:
            sink.on_result(result, labels)
        feed = self.feeds.get(result.camera)
        if feed is None:  # removed by a reload meanwhile
            return
        feed.last = result
        for change in feed.state_changes(result):
            for sink in self.sinks:
                sink.on_state(change)

    def on_windows(self, windows: dict[str | None, Window]) -> None:
        for feed in self.feeds.values():
            window = windows.get(feed.name, NO_WINDOW)
            feed.stats = self._stats_of(window, feed.last, self._feed_counters(feed))
        if not self.named:
            self._stats = next(iter(self.feeds.values())).stats
            snapshot = self.snapshot()
            for sink in self.sinks:
                sink.on_stats(snapshot)
            return
        self._stats = dataclasses.replace(NO_STATS, fps=sum(w.fps for w in windows.values()))
        snapshot = self.snapshot()
        for part in (*snapshot.cameras, snapshot):
            for sink in self.sinks:
                sink.on_stats(part)

    def _stats_of(self, window: Window, last: Result | None, counters: Counters) -> Stats:
        label = score = None
        if last is not None and last.regions:
            label, score = last.regions[0].label, last.regions[0].scores[0]
        elif last is not None and last.scores:
            label, score = (last.labels or self.classifier.labels)[last.classes[0]], last.scores[0]
        return Stats(window.fps, window.latency_p50_ms, window.latency_p95_ms, counters, label,
                     score)
