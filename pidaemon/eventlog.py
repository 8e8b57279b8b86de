"""Every line pi-infer writes: one logging handler for text, JSON and the journal.

Modules log through the `pi-infer` logger; records may carry an `event` name ("stats",
"prediction", "camera") and `fields`, which become JSON keys and, upper-cased with a
`PI_INFER_` prefix, journal fields that `journalctl PI_INFER_LABEL=espresso` can match.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any, TextIO

from pidaemon.systemd.journal import JournalSender, priority_prefix, stream_is_journal

LOGGER_NAME = "pi-infer"
PRIORITIES = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
              logging.CRITICAL: 2}

log = logging.getLogger(LOGGER_NAME)


def emit(event: str, message: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log a structured event; `fields` keep their names in JSON output."""
    log.log(level, message, extra={"event": event, "fields": fields})


# Journal field names that differ from the JSON key, so queries stay short.
JOURNAL_ALIASES = {"latency_p50_ms": "LATENCY_MS"}


def journal_fields(event: str, fields: dict[str, Any]) -> dict[str, object]:
    """Scalar fields as PI_INFER_* journal fields (lists stay in the message)."""
    out: dict[str, object] = {"PI_INFER_EVENT": event}
    for name, value in fields.items():
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            out["PI_INFER_" + JOURNAL_ALIASES.get(name, name.upper())] = value
    return out


class EventHandler(logging.Handler):
    """Formats records as text or JSON lines; under systemd, also as native journal entries.

    A stream its reader closed (`pi-infer run | head -1`, or journald gone under systemd) is
    said once on stderr and then left alone: the daemon keeps running and its journal entries
    go on, rather than a "Logging error" traceback for every line.
    """

    def __init__(self, fmt: str = "text", stream: TextIO | None = None,
                 journal: JournalSender | None = None) -> None:
        super().__init__()
        self.fmt = fmt
        self.stream = stream or sys.stdout
        self.prefix_priority = stream_is_journal(self.stream)
        self.journal = journal
        self.stream_closed = False

    def render(self, record: logging.LogRecord) -> str:
        event = getattr(record, "event", "log")
        fields = getattr(record, "fields", {})
        message = record.getMessage()
        if record.exc_info and record.levelno >= logging.ERROR:
            message += "\n" + logging.Formatter().formatException(record.exc_info)
        if self.fmt == "json":
            body = {"event": event, "level": record.levelname.lower(), "message": message}
            body.update(fields)
            return json.dumps(body, separators=(", ", ": "))
        return message

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.render(record)
            priority = PRIORITIES.get(record.levelno, 6)
            event = getattr(record, "event", "log")
            if self.journal is not None:
                extra = journal_fields(event, getattr(record, "fields", {}))
                if self.journal.send(line, priority, extra):
                    return
            if self.stream_closed:
                return
            prefix = priority_prefix(priority) if self.prefix_priority else ""
            text = "\n".join(prefix + part for part in line.split("\n"))
            with self.lock:
                self.stream.write(text + "\n")
                self.stream.flush()
        except (OSError, ValueError) as exc:  # ValueError: the stream object was closed
            self._stream_gone(exc)
        except Exception:  # noqa: BLE001 - logging must never kill a worker
            self.handleError(record)

    def _stream_gone(self, exc: Exception) -> None:
        if self.stream_closed:
            return
        self.stream_closed = True
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        try:
            sys.stderr.write(f"pi-infer: the log output is closed ({reason}); its lines are "
                             f"dropped from now on, and pi-infer keeps running\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass


def configure(fmt: str = "text", stream: TextIO | None = None) -> EventHandler:
    """Route the `pi-infer` logger to one EventHandler (replacing any earlier one)."""
    stream = stream or sys.stdout
    handler = EventHandler(fmt, stream, JournalSender.for_stream(stream))
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False
    return handler
