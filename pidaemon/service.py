"""The daemon's lifecycle: start the pipeline, watch it, reload it, stop it.

Signal handlers only set flags and wake the main loop (during start-up, where the main thread is
busy loading the model, SIGTERM interrupts it instead); signals recorded before the service
existed (earlysignals) are acted on as if they came now. A reload prepares the new config and
model in a thread of its own (reloader), so the main loop still answers SIGTERM, and nothing a
reload raises ends the daemon: it is logged and the running configuration kept. The main loop
pings the systemd watchdog only while every worker's heartbeat is fresh, so a hung thread gets
the service restarted, and it turns a dead worker into a non-zero exit rather than a half-alive
process.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path
from types import FrameType

from pidaemon import earlysignals
from pidaemon.config import Config
from pidaemon.cpus import resolve_threads
from pidaemon.errors import ModelError, PiInferError
from pidaemon.eventlog import emit
from pidaemon.model.classifier import load_classifier
from pidaemon.model.regions import ModelLoader, load_models
from pidaemon.outputs import build_sinks
from pidaemon.outputs.status import StatusSink
from pidaemon.pipeline import Pipeline, Snapshot
from pidaemon.pipeline.tap import FrameTap
from pidaemon.reloader import ReloadJob, describe_failure, finish_reload
from pidaemon.sources import SourceFactory, make_source
from pidaemon.systemd import Notifier

TICK = 0.25
DEFAULT_HEALTH_WINDOW = 30.0  # heartbeat age that counts as hung when systemd sets no watchdog
CAPTURE_ATTEMPT_TIMEOUT = 10.0


class TerminateRequest(BaseException):
    """Raised in the main thread by SIGTERM/SIGINT while it is busy starting up.

    A BaseException, like KeyboardInterrupt, so that the model loader's `except Exception`
    (which turns a bad file into a ModelError) cannot mistake a stop for a broken model.
    """


class Service:
    """One daemon run. `run()` on the main thread owns the process's signals; on another
    thread (a test, an embedding program) it leaves them alone, and `request_stop()` and
    `request_reload()` do what SIGTERM and SIGHUP do. `make_source` and `load_model` are what
    opens cameras and loads models, for callers that bring their own."""

    def __init__(self, config: Config, config_path: Path | None, source: str | None = None,
                 duration: float | None = None, *, make_source: SourceFactory = make_source,
                 load_model: ModelLoader = load_classifier) -> None:
        self.config = config
        self.config_path = config_path
        self.source = source
        self.duration = duration
        self.make_source = make_source
        self.load_model = load_model
        self.notifier = Notifier()
        self.pipeline: Pipeline | None = None
        self.tap = FrameTap()  # the camera's newest image, for the live page
        self.sinks = [*build_sinks(config, self), StatusSink(self.notifier)]
        self._wake = threading.Event()
        self._stop = False
        self._reload = False
        self._reload_job: ReloadJob | None = None
        self._ignored: list[str] = []  # signals to log as ignored, by name
        self._starting = True

    # -- signals ------------------------------------------------------------------------------
    def _on_terminate(self, signum: int, _frame: FrameType | None) -> None:
        self._stop = True
        self._wake.set()
        if self._starting:
            raise TerminateRequest(signal.Signals(signum).name)

    def _on_reload(self, _signum: int, _frame: FrameType | None) -> None:
        self.request_reload()

    def request_stop(self) -> None:
        """Stop as SIGTERM does (from any thread; during start-up, once the model is loaded)."""
        self._stop = True
        self._wake.set()

    def request_reload(self) -> None:
        """Reload the config file as SIGHUP does (from any thread)."""
        self._reload = True
        self._wake.set()

    def _on_other(self, signum: int, _frame: FrameType | None) -> None:
        """SIGUSR1/2 mean nothing to pi-infer; by default they would end it without a word."""
        self._ignored.append(signal.Signals(signum).name)
        self._wake.set()

    def _install_signals(self) -> dict[int, object]:
        handlers = {signal.SIGTERM: self._on_terminate, signal.SIGINT: self._on_terminate,
                    signal.SIGHUP: self._on_reload, signal.SIGUSR1: self._on_other,
                    signal.SIGUSR2: self._on_other}
        previous = {signum: signal.signal(signum, handler)
                    for signum, handler in handlers.items()}
        for signum in earlysignals.take():
            if signum in earlysignals.STOPS:
                self._stop = True
            else:
                handlers[signum](signum, None)
        return previous

    def _log_ignored(self) -> None:
        while self._ignored:
            name = self._ignored.pop(0)
            emit("lifecycle", f"{name} ignored: pi-infer reloads on SIGHUP and stops on SIGTERM",
                 logging.WARNING, signal=name)

    # -- lifecycle ----------------------------------------------------------------------------
    def run(self) -> int:
        """Run until stopped; returns the exit status (errors are raised as PiInferError)."""
        on_main = threading.current_thread() is threading.main_thread()
        previous = self._install_signals() if on_main else {}
        try:
            if self._stop:
                emit("lifecycle", "stopping: signal received before start-up")
                return 0
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
        sources = (", ".join(f"{c.name}={c.camera.device}" for c in cfg.cameras)
                   if cfg.cameras else f"source {cfg.camera.device}")
        emit("lifecycle", f"starting: model {cfg.model.name}, engine {cfg.inference.engine}, "
             f"{resolve_threads(cfg.inference.threads)[1]}, {sources}")
        self.notifier.status("loading the model")
        try:
            classifier = self.load_model(cfg.model, cfg.inference)
            models = load_models(cfg, classifier, self.load_model)
        except PiInferError:
            raise
        except Exception as exc:  # one line and exit 78, not a traceback
            raise ModelError(f"cannot load the model ({describe_failure(exc)}); check "
                             f"model.weights, model.torchscript and model.labels") from exc
        emit("model", f"model: {classifier.description}, engine {classifier.engine}, "
             f"{len(classifier.labels)} classes, ready in {time.monotonic() - started:.1f} s",
             engine=classifier.engine, classes=len(classifier.labels))
        self.pipeline = Pipeline(classifier, cfg, {c.name: self.make_source(c.camera)
                                                   for c in cfg.feeds()}, self.sinks, models,
                                 self.tap)
        for sink in self.sinks:
            sink.start()
        self.pipeline.start()
        self.pipeline.wait_for_capture_attempt(CAPTURE_ATTEMPT_TIMEOUT)
        self._starting = False  # from here SIGTERM only sets a flag, and /healthz may say 200
        status = self._status()
        self.notifier.ready(status)
        emit("lifecycle", f"ready in {time.monotonic() - started:.1f} s: {status}",
             startup_s=round(time.monotonic() - started, 2))

    def _main_loop(self) -> None:
        assert self.pipeline is not None
        ready_at = time.monotonic()
        watchdog = self.notifier.watchdog_seconds
        last_ping = 0.0
        while True:
            self._wake.wait(TICK if watchdog is None else min(TICK, watchdog / 4))
            self._wake.clear()
            self._log_ignored()
            if self._stop:
                abandoned = " (abandoning the reload in progress)" if self._reload_job else ""
                emit("lifecycle", f"stopping: signal received{abandoned}")
                return
            if self._reload and self._reload_job is None:
                self._reload = False
                self._start_reload()
            if self._reload_job is not None and not self._reload_job.is_alive():
                self._finish_reload(self._reload_job)
            self.pipeline.raise_if_dead()
            now = time.monotonic()
            if self.pipeline.finished:
                emit("lifecycle", "stopping: the video file ended")
                return
            if self.duration is not None and now - ready_at >= self.duration:
                emit("lifecycle", f"stopping: --duration {self.duration:g} s reached")
                return
            if (watchdog is not None and now - last_ping >= watchdog / 2
                    and self.pipeline.alive(watchdog)):
                self.notifier.watchdog()
                last_ping = now

    def _shutdown(self) -> None:
        self.notifier.stopping()
        if self.pipeline is not None:
            self.pipeline.stop()
            self.pipeline.close()
        for sink in self.sinks:
            sink.stop()
        emit("lifecycle", "stopped")

    # -- what outputs may ask at any time (StateView) -----------------------------------------
    def snapshot(self) -> Snapshot | None:
        return self.pipeline.snapshot() if self.pipeline is not None else None

    def healthy(self) -> bool:
        """The watchdog's view: every worker made progress within its window."""
        window = self.notifier.watchdog_seconds or DEFAULT_HEALTH_WINDOW
        return (not self._starting and self.pipeline is not None
                and self.pipeline.alive(window))

    def _status(self) -> str:
        """What systemd shows now: a camera that is down, or simply running."""
        snapshot = self.snapshot()
        if snapshot is not None and snapshot.cameras:
            return snapshot.status
        down = [s.status for s in snapshot.sources if s.state.is_down] if snapshot else []
        return "; ".join(down) or "running"

    # -- reload -------------------------------------------------------------------------------
    def _start_reload(self) -> None:
        self.notifier.reloading()
        self._reload_job = ReloadJob(self.config, self.config_path, self.source, self._wake,
                                     self.load_model)
        self._reload_job.start()

    def _finish_reload(self, job: ReloadJob) -> None:
        """Apply what the job prepared, or log why not; the notifier hears READY again."""
        assert self.pipeline is not None
        self._reload_job = None
        applied = finish_reload(job, self.pipeline, self.make_source)
        if applied is not None:
            self.config = applied
        self.notifier.ready(self._status())
