"""Talking to systemd: readiness, status, reload, stop and watchdog notifications.

Everything is a no-op outside systemd. NOTIFY_SOCKET and the watchdog variables are removed from
the environment once read, so no child process can notify on our behalf.
"""

from __future__ import annotations

import os

import sdnotify


class Notifier:
    def __init__(self) -> None:
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self._notifier = sdnotify.SystemdNotifier() if self.enabled else None
        self.watchdog_usec = _watchdog_usec()
        for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
            os.environ.pop(name, None)

    def _send(self, *lines: str) -> None:
        if self._notifier is not None:
            # sdnotify encodes as Latin-1; systemd reads UTF-8 (a STATUS such as `door 30.0 fps
            # espresso · yard …`): hand it the UTF-8 bytes spelled as Latin-1.
            text = "\n".join(lines).encode("utf-8").decode("latin-1")
            self._notifier.notify(text)

    def ready(self, status: str) -> None:
        self._send("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        self._send(f"STATUS={status}")

    def reloading(self) -> None:
        self._send("RELOADING=1", "STATUS=reloading the configuration")

    def stopping(self) -> None:
        self._send("STOPPING=1", "STATUS=stopping")

    def watchdog(self) -> None:
        self._send("WATCHDOG=1")

    @property
    def watchdog_seconds(self) -> float | None:
        return self.watchdog_usec / 1e6 if self.watchdog_usec else None


def _watchdog_usec() -> int | None:
    """WATCHDOG_USEC when it is meant for this process (WATCHDOG_PID unset or ours)."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value if value > 0 else None
