"""Typed errors that the CLI maps to exit codes and one-line messages."""

# sysexits.h EX_CONFIG; the unit's RestartPreventExitStatus=78 stops restart loops on it.
EX_CONFIG = 78


class PiInferError(Exception):
    """Base of every error shown to the user as one clear line (no traceback)."""

    exit_code = 1


class ConfigError(PiInferError):
    """The configuration file is unreadable or invalid."""

    exit_code = EX_CONFIG


class ModelError(PiInferError):
    """Weights, TorchScript or labels cannot be used; restarting would not help."""

    exit_code = EX_CONFIG


class UnsupportedTorchError(PiInferError):
    """The installed torch is known to crash on this CPU; reinstalling is the fix."""

    exit_code = EX_CONFIG


class WorkerFailed(PiInferError):
    """A pipeline thread died; systemd should restart the service."""

    exit_code = 1


TORCHSCRIPT_PREAMBLE = "The following operation failed in the TorchScript interpreter"


def first_line(exc: BaseException) -> str:
    """The line of an exception that names the problem, for a one-line log message.

    TorchScript wraps errors in a traceback whose last line is the original error.
    """
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    return lines[-1] if lines[0].startswith(TORCHSCRIPT_PREAMBLE) else lines[0]
