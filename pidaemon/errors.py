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


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception: enough to name a problem in one log line."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
