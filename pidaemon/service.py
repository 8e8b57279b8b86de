"""The daemon's lifecycle: start the pipeline, watch it, reload it, stop it.

Signal handlers only set flags and wake the main loop (during start-up, where the main thread is
busy loading the model, SIGTERM interrupts it instead). The main loop pings the systemd watchdog
only while every worker's heartbeat is fresh, so a hung thread gets the service restarted, and it
turns a dead worker into a non-zero exit rather than a half-alive process.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import threading
import time
from pathlib import Path
from types import FrameType

from pidaemon import config as config_module
from pidaemon.capture import CaptureWorker, Frame
from pidaemon.config import Config
from pidaemon.cpus import resolve_threads
from pidaemon.errors import ConfigError, ModelError, WorkerFailed, first_line
from pidaemon.eventlog import emit
from pidaemon.framequeue import DropOldestQueue
from pidaemon.inference import InferenceWorker, LiveSettings, Result
from pidaemon.model import Classifier, load_classifier
from pidaemon.results import Counters, ResultsWorker, Stats
from pidaemon.sinks import Sink, build_sinks
from pidaemon.systemd import Notifier
from pidaemon.worker import Worker

RESULTS_BUFFER = 256
JOIN_TIMEOUT = 1.5  # per thread; SIGTERM to exit stays under 2 s
TICK = 0.25
DEFAULT_HEALTH_WINDOW = 30.0  # heartbeat age that counts as hung when systemd sets no watchdog


class TerminateRequest(BaseException):
    """Raised in the main thread by SIGTERM/SIGINT while it is busy starting up.

    A BaseException, like KeyboardInterrupt, so that the model loader's `except Exception`
    (which turns a bad file into a ModelError) cannot mistake a stop for a broken model.
    """


class Service:
    def __init__(self, config: Config, config_path: Path | None, source: str | None = None,
                 duration: float | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.source = source
        self.duration = duration
        self.notifier = Notifier()
        self.classifier: Classifier | None = None
        self.frames: DropOldestQueue[Frame] = DropOldestQueue(config.queue.size)
        self.results: DropOldestQueue[Result] = DropOldestQueue(RESULTS_BUFFER)
        self.capture: CaptureWorker | None = None
        self.inference: InferenceWorker | None = None
        self.results_worker: ResultsWorker | None = None
        threads, self._threads_line = resolve_threads(config.inference.threads)
        self.settings = LiveSettings(threads, config.model.top_k,
                                     config.inference.max_consecutive_errors)
        self._wake = threading.Event()
        self._stop = False
        self._reload = False
        self._starting = True
        self._captured_before = 0
        self._bad_before = 0
        self.sinks: list[Sink] = build_sinks(config, self.healthy)

    # -- signals ------------------------------------------------------------------------------
    def _on_terminate(self, signum: int, _frame: FrameType | None) -> None:
        self._stop = True
        self._wake.set()
        if self._starting:
            raise TerminateRequest(signal.Signals(signum).name)

    def _on_reload(self, _signum: int, _frame: FrameType | None) -> None:
        self._reload = True
        self._wake.set()

    def _install_signals(self) -> dict[int, object]:
        previous = {}
        for signum, handler in ((signal.SIGTERM, self._on_terminate),
                                (signal.SIGINT, self._on_terminate),
                                (signal.SIGHUP, self._on_reload)):
            previous[signum] = signal.signal(signum, handler)
        return previous

    # -- lifecycle ----------------------------------------------------------------------------
    def run(self) -> int:
        """Run until stopped; returns the exit status (errors are raised as PiInferError)."""
        previous = self._install_signals()
        try:
            try:
                self._startup()
            except TerminateRequest as request:
                emit("lifecycle", f"stopping: {request} during start-up")
                return 0
            finally:
                self._starting = False
            if self._stop:
                return 0
            self._main_loop()
            return 0
        finally:
            self._shutdown()
            for signum, handler in previous.items():
                signal.signal(signum, handler)  # type: ignore[arg-type]

    def _startup(self) -> None:
        started = time.monotonic()
        cfg = self.config
        emit("lifecycle", f"starting: model {cfg.model.name}, engine {cfg.inference.engine}, "
             f"{self._threads_line}, source {cfg.camera.device}")
        self.notifier.status("loading the model")
        self.classifier = load_classifier(cfg.model, cfg.inference)
        emit("model", f"model: {self.classifier.description}, engine {self.classifier.engine}, "
             f"{len(self.classifier.labels)} classes, ready in {time.monotonic() - started:.1f} s",
             engine=self.classifier.engine, classes=len(self.classifier.labels))
        self.inference = InferenceWorker(self.classifier, self.frames, self.results, self.settings)
        self.results_worker = ResultsWorker(self.results, self._labels, self._counters,
                                            cfg.output, self._on_stats, self._on_result)
        self.capture = CaptureWorker(cfg.camera, self.frames)
        for sink in self.sinks:
            sink.start()
        for worker in (self.results_worker, self.inference, self.capture):
            worker.start()
        self._wait_for_capture_attempt()
        self._starting = False  # from here SIGTERM only sets a flag, and /healthz may say 200
        status = self._status_prefix() or "running"
        self.notifier.ready(status)
        emit("lifecycle", f"ready in {time.monotonic() - started:.1f} s: {status}",
             startup_s=round(time.monotonic() - started, 2))

    def _wait_for_capture_attempt(self) -> None:
        """READY means the capture thread is running and has tried the camera once."""
        assert self.capture is not None
        deadline = time.monotonic() + 10
        while self.capture.state == "starting" and time.monotonic() < deadline:
            time.sleep(0.01)

    def _main_loop(self) -> None:
        ready_at = time.monotonic()
        watchdog = self.notifier.watchdog_seconds
        last_ping = 0.0
        while True:
            self._wake.wait(TICK if watchdog is None else min(TICK, watchdog / 4))
            self._wake.clear()
            if self._stop:
                emit("lifecycle", "stopping: signal received")
                return
            if self._reload:
                self._reload = False
                self._apply_reload()
            self._raise_if_dead()
            now = time.monotonic()
            if self.capture is not None and self.capture.ended and self._drained():
                emit("lifecycle", "stopping: the video file ended")
                return
            if self.duration is not None and now - ready_at >= self.duration:
                emit("lifecycle", f"stopping: --duration {self.duration:g} s reached")
                return
            if (watchdog is not None and now - last_ping >= watchdog / 2
                    and self._alive(now, watchdog)):
                self.notifier.watchdog()
                last_ping = now

    def _workers(self) -> list[Worker]:
        return [w for w in (self.capture, self.inference, self.results_worker) if w is not None]

    def healthy(self) -> bool:
        """The watchdog's view: every worker made progress within its window."""
        window = self.notifier.watchdog_seconds or DEFAULT_HEALTH_WINDOW
        return not self._starting and self._alive(time.monotonic(), window)

    def _alive(self, now: float, window: float) -> bool:
        """Every worker made progress within `window` seconds (a hang stops the pings)."""
        return all(w.stale_for(now) < window for w in self._workers() if w.is_alive())

    def _raise_if_dead(self) -> None:
        for worker in self._workers():
            if worker.error is not None:
                raise WorkerFailed(f"the {worker.name} thread failed: {first_line(worker.error)}"
                                   ) from worker.error
            if not worker.is_alive() and not worker.stop_event.is_set():
                raise WorkerFailed(f"the {worker.name} thread ended unexpectedly")

    def _drained(self) -> bool:
        return len(self.frames) == 0 and self.inference is not None and not self.inference.busy

    def _shutdown(self) -> None:
        self.notifier.stopping()
        self.frames.close()
        for worker in (self.capture, self.inference, self.results_worker):
            if worker is None:
                continue
            worker.stop()
            if worker is self.inference:
                self.results.close()
            if worker.is_alive():
                worker.join(JOIN_TIMEOUT)
            if worker.is_alive():
                emit("lifecycle", f"the {worker.name} thread did not stop within "
                     f"{JOIN_TIMEOUT:g} s; exiting without it", logging.WARNING)
        for sink in self.sinks:
            sink.stop()
        emit("lifecycle", "stopped")

    # -- reload -------------------------------------------------------------------------------
    def _apply_reload(self) -> None:
        self.notifier.reloading()
        try:
            new = config_module.load(self.config_path).with_source(self.source)
            changed = self._reconfigure(new)
        except (ConfigError, ModelError) as exc:
            emit("reload", f"reload failed, keeping the running configuration: {exc}",
                 logging.ERROR)
        else:
            self.config = new
            what = ", ".join(changed) if changed else "nothing changed"
            emit("reload", f"reload: configuration applied ({what})", changed=",".join(changed))
        self.notifier.ready(self._status_prefix() or "running")

    def _reconfigure(self, new: Config) -> list[str]:
        """Apply `new` to the running pipeline; returns the sections that changed."""
        old = self.config
        changed = [name for name in ("camera", "queue", "inference", "model", "output")
                   if getattr(old, name) != getattr(new, name)]
        for name in ("mqtt", "metrics"):
            if getattr(old, name) != getattr(new, name):
                emit("reload", f"reload: {name} changes take effect at the next restart",
                     logging.WARNING)
        model_keys = dataclasses.replace(new.model, top_k=old.model.top_k) != old.model
        engine_keys = (new.inference.engine, new.inference.jit) != (old.inference.engine,
                                                                    old.inference.jit)
        if model_keys or engine_keys:
            classifier = load_classifier(new.model, new.inference)
            assert self.inference is not None
            self.classifier = self.inference.classifier = classifier
            emit("model", f"model: reloaded {classifier.description}, engine {classifier.engine}")
        self.settings.threads, _ = resolve_threads(new.inference.threads)
        self.settings.top_k = new.model.top_k
        self.settings.max_consecutive_errors = new.inference.max_consecutive_errors
        assert self.results_worker is not None
        self.results_worker.output = new.output
        if new.queue != old.queue:
            self.frames.resize(new.queue.size)
        if new.camera != old.camera:
            self._restart_capture(new)
        return changed

    def _restart_capture(self, new: Config) -> None:
        assert self.capture is not None
        self.capture.stop()
        self.capture.join(JOIN_TIMEOUT)
        self._captured_before += self.capture.captured
        self._bad_before += self.capture.bad_frames
        self.capture = CaptureWorker(new.camera, self.frames, self.capture.next_seq)
        self.capture.start()

    # -- what the results thread reads --------------------------------------------------------
    def _labels(self) -> list[str]:
        assert self.classifier is not None
        return self.classifier.labels

    def _counters(self) -> Counters:
        capture, inference = self.capture, self.inference
        return Counters(
            captured=self._captured_before + (capture.captured if capture else 0),
            processed=inference.processed if inference else 0,
            dropped=self.frames.dropped,
            bad_frames=self._bad_before + (capture.bad_frames if capture else 0),
            failed_frames=inference.failed_frames if inference else 0)

    def _status_prefix(self) -> str:
        """What systemd should show when the camera is not streaming."""
        if self.capture is not None and self.capture.state in ("waiting", "lost"):
            return self.capture.status
        return ""

    def _on_stats(self, stats: Stats) -> None:
        status = self._status_prefix() or stats.summary()
        self.notifier.status(status)
        for sink in self.sinks:
            sink.on_stats(stats, status)

    def _on_result(self, result: Result) -> None:
        labels = self._labels()
        for sink in self.sinks:
            sink.on_result(result, labels)
