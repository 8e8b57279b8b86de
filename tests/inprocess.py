"""`pi-infer run` in-process: the real Service on a thread of the test, its log lines collected as
the JSON events `pi-infer run --log-format json` prints.

It speaks like conftest.Daemon (events, wait_for, of, finish) so that a test reads the same either
way; what needs a process boundary (signals, a closed stdout, exit without traceback) stays a
subprocess test. `stop()` and `reload()` are what SIGTERM and SIGHUP do.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from pidaemon import cli
from pidaemon import config as config_module
from pidaemon.errors import PiInferError
from pidaemon.eventlog import LOGGER_NAME, EventHandler
from pidaemon.service import Service

from .events import EventStream


class _Collector(EventHandler):
    """Each record rendered as the JSON line the daemon would print, parsed back."""

    def __init__(self, sink: queue.Queue[dict | None]) -> None:
        super().__init__("json")
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.put(json.loads(self.render(record)))


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """`values` in os.environ while the Service reads them (the Notifier, at construction)."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class ServiceRun(EventStream):
    """One Service running on a thread; `args` are `pi-infer run`'s (--config, --source, ...)."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None,
                 **inject: Callable) -> None:
        super().__init__()
        self.exit_code: int | None = None
        self.error: BaseException | None = None
        self._collector = _Collector(self.lines)
        logger = logging.getLogger(LOGGER_NAME)
        self._saved_log = (list(logger.handlers), logger.level, logger.propagate)
        logger.handlers[:] = [self._collector]
        logger.setLevel(logging.INFO)
        logger.propagate = False
        parsed = cli.build_parser().parse_args(["run", *args])
        self.service: Service | None = None
        try:
            cfg = config_module.load(parsed.config).with_source(parsed.source)
            # systemd's variables only as the test gives them: never those of a pytest that
            # itself runs under systemd.
            with _environment({"NOTIFY_SOCKET": "", "WATCHDOG_USEC": "", **(env or {})}):
                self.service = Service(cfg, parsed.config, parsed.source, parsed.duration,
                                       **inject)
        except PiInferError as exc:
            self._failed(exc)
            return
        self.thread = threading.Thread(target=self._run, name="service", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        assert self.service is not None
        try:
            self.exit_code = self.service.run()
        except PiInferError as exc:
            self._failed(exc)
        except BaseException as exc:  # noqa: BLE001 - the test sees it in finish()
            self.error = exc
            self.exit_code = 1
        finally:
            self.lines.put(None)

    def _failed(self, exc: PiInferError) -> None:
        cli.report_error("run", exc)
        self.exit_code = exc.exit_code
        self.lines.put(None)

    # -- what the test does, as systemd would ---------------------------------------------------
    def stop(self) -> None:
        if self.service is not None:
            self.service.request_stop()

    def reload(self) -> None:
        assert self.service is not None
        self.service.request_reload()

    @property
    def running(self) -> bool:
        return self.service is not None and self.thread.is_alive()

    def finish(self, timeout: float = 10) -> int:
        """Wait for run() to return, collect the remaining events, return the exit status."""
        if self.service is not None:
            self.thread.join(timeout)
            assert not self.thread.is_alive(), f"the service did not stop within {timeout} s"
        self.drain()
        self.close()
        if self.error is not None:
            raise AssertionError(f"Service.run raised {self.error!r}") from self.error
        assert self.exit_code is not None
        return self.exit_code

    def close(self) -> None:
        """Stop it if it still runs; the `pi-infer` logger goes back to how it was."""
        if self.running:
            self.stop()
            self.thread.join(10)
        logger = logging.getLogger(LOGGER_NAME)
        if self._collector in logger.handlers:
            handlers, level, propagate = self._saved_log
            logger.handlers[:] = handlers
            logger.setLevel(level)
            logger.propagate = propagate

    def describe_end(self) -> str:
        return f"exit={self.exit_code} error={self.error!r}"


def ready(event: dict) -> bool:
    """The `ready in N s` lifecycle line: READY=1 was sent."""
    return event["event"] == "lifecycle" and event["message"].startswith("ready")
