"""The thread base shared by capture, inference and results workers.

Each worker runs `setup()`, then `step()` until asked to stop, then `teardown()`. Every pass
through the loop refreshes `heartbeat`, which the service checks before pinging the systemd
watchdog, and an exception is stored rather than lost so the service can exit with its reason.
"""

from __future__ import annotations

import threading
import time


class Worker(threading.Thread):
    """A stoppable thread with a heartbeat and a stored failure."""

    def __init__(self, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.stop_event = threading.Event()
        self.heartbeat = time.monotonic()
        self.error: BaseException | None = None

    def setup(self) -> None:
        """Prepare resources in the worker's own thread."""

    def step(self) -> None:
        """One bounded unit of work; must return within about a second."""
        raise NotImplementedError

    def teardown(self) -> None:
        """Release resources; runs even after a failure."""

    def beat(self) -> None:
        self.heartbeat = time.monotonic()

    def run(self) -> None:
        try:
            self.beat()
            self.setup()
            while not self.stop_event.is_set():
                self.beat()
                self.step()
        except BaseException as exc:  # noqa: BLE001 - stored and reported by the service
            self.error = exc
        finally:
            try:
                self.teardown()
            except BaseException as exc:  # noqa: BLE001
                self.error = self.error or exc

    def stop(self) -> None:
        self.stop_event.set()

    def stale_for(self, now: float) -> float:
        """Seconds since the loop last made progress."""
        return now - self.heartbeat
