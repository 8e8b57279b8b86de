"""A NOTIFY_SOCKET of our own: what systemd would hear from `pi-infer run`, without systemd.

The bench times start-up to READY=1 with it, and the tests check the exact notifications; one
class serves both so that both hear the daemon the same way.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path


class NotifyListener:
    """An AF_UNIX datagram socket bound at `path`, one message per notification."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        Path(self.path).unlink(missing_ok=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages: list[tuple[float, str]] = []  # (monotonic time received, text)

    def env(self, base: dict[str, str]) -> dict[str, str]:
        """`base` with NOTIFY_SOCKET pointing here."""
        return {**base, "NOTIFY_SOCKET": self.path}

    def drain(self, seconds: float) -> None:
        """Collect what arrives within `seconds` (0: only what is already there)."""
        deadline = time.monotonic() + seconds
        while True:
            self.sock.settimeout(max(0.0, deadline - time.monotonic()))  # 0: non-blocking
            try:
                self.messages.append((time.monotonic(), self.sock.recv(4096).decode()))
            except (TimeoutError, BlockingIOError):
                return

    def wait_for(self, text: str, timeout: float = 60,
                 gave_up: Callable[[], str | None] = lambda: None) -> float:
        """Until a message containing `text` arrives; returns when it arrived.

        `gave_up` may name a reason to stop waiting early (the process exited).
        """
        deadline = time.monotonic() + timeout
        while True:
            for received, message in self.messages:
                if text in message:
                    return received
            reason = gave_up()
            if reason is not None:
                raise RuntimeError(f"{text!r} never sent: {reason}")
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{text!r} not sent within {timeout:g} s; got "
                                   f"{[m for _, m in self.messages]}")
            self.drain(0.2)

    def kinds(self) -> list[str]:
        """The first line of each message, STATUS texts collapsed to `STATUS`."""
        firsts = (message.split("\n")[0] for _, message in self.messages)
        return ["STATUS" if first.startswith("STATUS=") else first for first in firsts]

    def close(self) -> None:
        self.sock.close()
        Path(self.path).unlink(missing_ok=True)
