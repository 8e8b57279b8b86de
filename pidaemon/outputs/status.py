"""systemd's STATUS line, kept current from each stats snapshot (the service adds this sink)."""

from __future__ import annotations

from pidaemon.pipeline.sink import Sink
from pidaemon.pipeline.snapshot import Snapshot
from pidaemon.systemd.notify import Notifier


class StatusSink(Sink):
    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier

    def on_stats(self, snapshot: Snapshot) -> None:
        if snapshot.camera is None:  # the whole, not one camera of several
            self.notifier.status(snapshot.status)
