"""`pi-infer COMMAND ARGS` in-process: pidaemon.cli.main on a thread of the test, its output read
with capsys, for the cases that only check an exit status and what was printed (a config error,
a refused dataset). What needs a process boundary (no traceback from the real process, signals)
stays a subprocess test (conftest.pi_infer).

`cli.main` routes the `pi-infer` logger to the sys.stdout of the moment (capsys's); the logger is
put back as it was afterwards, so no later test logs into a closed capture.
"""

from __future__ import annotations

import io
import logging
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout

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
        logger.handlers[:] = saved[0]
        logger.setLevel(saved[1])
        logger.propagate = saved[2]


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


def _call(args: tuple[str, ...], timeout: float) -> int:
    """cli.main(args) on a thread of its own (torch's thread settings and a hang stay there);
    its exit status, or what it raised, raised here."""
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
    error = outcome.get("error")
    if isinstance(error, BaseException):
        raise AssertionError(f"pi-infer {' '.join(args)} raised {error!r}") from error
    code = outcome["code"]
    assert isinstance(code, int)
    return code


def run_cli(capsys: pytest.CaptureFixture[str], *args: str,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`pi-infer ARGS` through cli.main; the exit status and the output, as pi_infer returns
    them. Fails if it has not returned within `timeout` s (a hang is a failure, not a stuck
    run)."""
    capsys.readouterr()  # what the test printed before is not the command's
    code = _call(args, timeout)
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(["pi-infer", *args], code, captured.out, captured.err)


def run_cli_captured(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """The same where capsys is not at hand (a module-scoped fixture): the output is read
    from sys.stdout and sys.stderr replaced meanwhile."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = _call(args, timeout)
    return subprocess.CompletedProcess(["pi-infer", *args], code, out.getvalue(), err.getvalue())
