"""`pi-infer COMMAND ARGS` in-process: pidaemon.cli.main on a thread of the test, its output read
with capsys, for the cases that only check an exit status and what was printed (a config error,
a refused dataset). What needs a process boundary (no traceback from the real process, signals)
stays a subprocess test (conftest.pi_infer).

`cli.main` routes the `pi-infer` logger to the sys.stdout of the moment (capsys's); the logger is
put back as it was afterwards, so no later test logs into a closed capture.
"""

from __future__ import annotations

import logging
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from pidaemon import cli
from pidaemon.eventlog import LOGGER_NAME


@contextmanager
def kept_log() -> Iterator[None]:
    """The `pi-infer` logger's handlers, level and propagation restored at the end."""
    logger = logging.getLogger(LOGGER_NAME)
    saved = (list(logger.handlers), logger.level, logger.propagate)
    try:
        yield
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved


@contextmanager
def logged() -> Iterator[list[str]]:
    """The lines the `pi-infer` logger gets meanwhile (from a direct call such as
    load_classifier, which logs what it does to the compiled-model cache)."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger = logging.getLogger(LOGGER_NAME)
    handler, level = Collect(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def run_cli(capsys: pytest.CaptureFixture[str], *args: str,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`pi-infer ARGS` through cli.main; the exit status and the output, as pi_infer returns
    them. Fails if it has not returned within `timeout` s (a hang is a failure, not a stuck
    run)."""
    capsys.readouterr()  # what the test printed before is not the command's
    outcome: dict[str, object] = {}

    def main() -> None:
        try:
            outcome["code"] = cli.main(list(args))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            outcome["error"] = exc

    with kept_log():
        thread = threading.Thread(target=main, name="pi-infer-cli", daemon=True)
        thread.start()
        thread.join(timeout)
        assert not thread.is_alive(), f"pi-infer {' '.join(args)} still runs after {timeout} s"
    captured = capsys.readouterr()
    if "error" in outcome:
        raise AssertionError(f"pi-infer {' '.join(args)} raised: {outcome['error']!r}\n"
                             f"{captured.out}{captured.err}") from outcome["error"]  # type: ignore[misc]
    return subprocess.CompletedProcess(["pi-infer", *args], outcome["code"], captured.out,
                                       captured.err)
