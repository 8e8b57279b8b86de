"""systemd journal output: native protocol for structured fields, `<N>` prefixes for stdout.

The native protocol is a datagram of `KEY=value` lines to /run/systemd/journal/socket. It is
implemented here (a few lines) rather than through systemd-python, which needs libsystemd headers
and a compiler on every Pi. A send that fails returns False so the caller can fall back to stdout
and no line is lost.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
from typing import TextIO

JOURNAL_SOCKET = "/run/systemd/journal/socket"


def stream_is_journal(stream: TextIO) -> bool:
    """True when `stream` is the journal stream systemd connected us to (JOURNAL_STREAM)."""
    expected = os.environ.get("JOURNAL_STREAM")
    if not expected:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return expected == f"{st.st_dev}:{st.st_ino}"


def encode_field(name: str, value: object) -> bytes:
    """One field; values with newlines use the length-prefixed binary form."""
    data = str(value).encode("utf-8", "replace")
    key = name.encode("ascii")
    if b"\n" in data:
        return key + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
    return key + b"=" + data + b"\n"


class JournalSender:
    """Sends structured entries to journald; `send` returns False when it could not."""

    def __init__(self, path: str = JOURNAL_SOCKET, identifier: str = "pi-infer") -> None:
        self._path = path
        self._identifier = identifier
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None

    @classmethod
    def for_stream(cls, stream: TextIO) -> JournalSender | None:
        """A sender when running under systemd with our output going to the journal."""
        if stream_is_journal(stream) and os.path.exists(JOURNAL_SOCKET):
            return cls()
        return None

    def send(self, message: str, priority: int, fields: dict[str, object]) -> bool:
        payload = b"".join([
            encode_field("MESSAGE", message),
            encode_field("PRIORITY", priority),
            encode_field("SYSLOG_IDENTIFIER", self._identifier),
            *(encode_field(k, v) for k, v in fields.items() if v is not None),
        ])
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.sendto(payload, self._path)
                return True
            except OSError:
                if self._sock is not None:
                    self._sock.close()
                self._sock = None
                return False


def priority_prefix(priority: int) -> str:
    """The sd-daemon(3) prefix journald turns into the line's priority."""
    return f"<{priority}>"

