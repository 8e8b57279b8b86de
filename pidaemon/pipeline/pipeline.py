"""The Pipeline: capture, inference and results threads around two drop-oldest queues.

It owns everything that moves frames: the queues, the three workers and their start and stop
order, the counters (capture totals go on across camera restarts), capture restarts, model swaps
and liveness. The service keeps signals, systemd and reload; the bench builds the very same
Pipeline around a simulated camera.
"""

from __future__ import annotations

import logging
import time

from pidaemon.config import CameraConfig, Config
from pidaemon.config.regions import Region
from pidaemon.cpus import resolve_threads
from pidaemon.errors import WorkerFailed, first_line
from pidaemon.eventlog import emit
from pidaemon.model.base import Classifier
from pidaemon.model.regions import Models
from pidaemon.pipeline.capture import CaptureWorker
from pidaemon.pipeline.framequeue import DropOldestQueue
from pidaemon.pipeline.frames import Frame, Result
from pidaemon.pipeline.inference import InferenceWorker, LiveSettings
from pidaemon.pipeline.results import ResultsWorker
from pidaemon.pipeline.sink import Sink
from pidaemon.pipeline.snapshot import (
    Counters,
    ModelInfo,
    RegionInfo,
    Snapshot,
    SourceStatus,
    Stats,
)
from pidaemon.pipeline.state import SteadyState
from pidaemon.pipeline.worker import Worker
from pidaemon.sources import CameraState, FrameSource

RESULTS_BUFFER = 256
JOIN_TIMEOUT = 1.5  # per thread; SIGTERM to exit stays under 2 s


class Pipeline:
    def __init__(self, classifier: Classifier, config: Config, source: FrameSource,
                 sinks: list[Sink], models: Models | None = None) -> None:
        self.classifier = classifier
        self.models: Models = models or {None: classifier}  # the classifiers regions use
        self.regions: tuple[Region, ...] = config.regions
        self.states = {r.name: SteadyState(r.name, r.state) for r in self.regions}
        self.sinks = sinks
        self.frames: DropOldestQueue[Frame] = DropOldestQueue(config.queue.size)
        self.results: DropOldestQueue[Result] = DropOldestQueue(RESULTS_BUFFER)
        self.settings = LiveSettings(resolve_threads(config.inference.threads)[0],
                                     config.model.top_k,
                                     config.inference.max_consecutive_errors)
        self.capture = CaptureWorker(source, config.camera, self.frames, regions=self.regions)
        self.inference = InferenceWorker(classifier, self.frames, self.results, self.settings)
        self.inference.models = self.models
        self.results_worker = ResultsWorker(self.results, config.output.interval, self)
        self._retired = Counters()  # capture totals of cameras since replaced
        self._stats: Stats | None = None

    @property
    def workers(self) -> list[Worker]:
        return [self.capture, self.inference, self.results_worker]

    # -- start and stop -----------------------------------------------------------------------
    def start(self) -> None:
        """Consumers first, so the first frame finds its way through."""
        self._announce_regions()
        for worker in (self.results_worker, self.inference, self.capture):
            worker.start()

    def wait_for_capture_attempt(self, timeout: float) -> None:
        """Until the capture thread has tried the source once (READY's promise)."""
        deadline = time.monotonic() + timeout
        while self.capture.state is CameraState.STARTING and time.monotonic() < deadline:
            time.sleep(0.01)

    def stop(self, timeout: float = JOIN_TIMEOUT) -> None:
        """Producers first; the results thread delivers every result already made, then ends.

        Each thread gets `timeout`; one that hangs is left behind with a warning.
        """
        self.frames.close()
        for worker in (self.capture, self.inference):
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
    def restart_capture(self, source: FrameSource, config: CameraConfig) -> None:
        old = self.capture
        old.stop()
        old.join(JOIN_TIMEOUT)
        self._retired = self._retired + Counters(captured=old.captured, bad_frames=old.bad_frames)
        self.capture = CaptureWorker(source, config, self.frames, old.next_seq, self.regions)
        self.capture.start()

    def swap_model(self, classifier: Classifier) -> None:
        """The next frame runs on `classifier`; the frame in flight finishes on the old one."""
        self.swap_models({None: classifier})

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
        self.set_regions(config.regions)

    def set_regions(self, regions: tuple[Region, ...]) -> None:
        """New boxes apply from the next frame; a kept region keeps its state."""
        states = {}
        for region in regions:
            states[region.name] = self.states.get(region.name) or SteadyState(region.name,
                                                                              region.state)
            states[region.name].config = region.state
        self.states = states
        self.regions = self.capture.regions = regions
        self._announce_regions()

    def region_infos(self) -> tuple[RegionInfo, ...]:
        return tuple(RegionInfo(r.name, r.box, self.models[r.model].labels)
                     for r in self.regions if r.model in self.models)

    def _announce_regions(self) -> None:
        infos = self.region_infos()
        for sink in self.sinks:
            sink.on_regions(infos)

    # -- state --------------------------------------------------------------------------------
    def counters(self) -> Counters:
        capture, inference = self.capture, self.inference
        return self._retired + Counters(
            captured=capture.captured, processed=inference.processed, dropped=self.frames.dropped,
            bad_frames=capture.bad_frames, failed_frames=inference.failed_frames)

    def snapshot(self) -> Snapshot:
        capture, classifier = self.capture, self.classifier
        stats = self._stats or Stats(0.0, None, None, Counters(), None, None)
        stats = Stats(stats.fps, stats.latency_p50_ms, stats.latency_p95_ms, self.counters(),
                      stats.label, stats.score)
        source = SourceStatus(str(capture.config.device), capture.state, capture.status,
                              capture.source.grant)
        return Snapshot((source,), ModelInfo(classifier.description, classifier.engine,
                                             classifier.labels),
                        stats, self.results_worker.last)

    def alive(self, window: float) -> bool:
        """Every running worker made progress within `window` seconds."""
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
        """A video file without loop has ended and every frame of it has been classified."""
        return (self.capture.ended and len(self.frames) == 0 and not self.inference.busy)

    # -- the results thread's listener --------------------------------------------------------
    def on_result(self, result: Result) -> None:
        labels = result.regions[0].labels if result.regions else self.classifier.labels
        for sink in self.sinks:
            sink.on_result(result, labels)
        states = self.states
        for region in result.regions:
            tracker = states.get(region.name)
            change = tracker.update(region, result.captured_at) if tracker else None
            if change is not None:
                for sink in self.sinks:
                    sink.on_state(change)

    def on_window(self, fps: float, latency_p50_ms: float | None,
                  latency_p95_ms: float | None, last: Result | None) -> None:
        label = score = None
        if last is not None and last.regions:
            label, score = last.regions[0].label, last.regions[0].scores[0]
        elif last is not None and last.scores:
            label, score = self.classifier.labels[last.classes[0]], last.scores[0]
        self._stats = Stats(fps, latency_p50_ms, latency_p95_ms, self.counters(), label, score)
        snapshot = self.snapshot()
        for sink in self.sinks:
            sink.on_stats(snapshot)
