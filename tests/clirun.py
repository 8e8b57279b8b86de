"""`pi-infer COMMAND ARGS` in-process through `pidaemon.cli.main`, for the errors a command
reports before it does anything a process of its own is needed for (exit 78 and one line).

What it prints is read with pytest's capsys: `run` sends its error line to the log, which
`cli.main` routes to sys.stdout (captured); other commands print it to stderr. The answer reads
like conftest.pi_infer's. That the real process exits 78 without a traceback is proved once per
kind of error by a subprocess test marked `system`.
"""

from __future__ import annotations

import logging
import subprocess

import pytest

from pidaemon import cli
from pidaemon.eventlog import LOGGER_NAME


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> subprocess.CompletedProcess:
    """cli.main(args): its exit status, and what it wrote to stdout and stderr meanwhile."""
    logger = logging.getLogger(LOGGER_NAME)
    saved = logger.handlers[:], logger.level, logger.propagate
    capsys.readouterr()  # what came before is not this command's
    try:
        code = cli.main(list(args))
    finally:
        # The log handler cli.main installed writes to the captured stdout of this test only.
        logger.handlers[:] = saved[0]
        logger.setLevel(saved[1])
        logger.propagate = saved[2]
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["pi-infer", *args], code, out, err)
