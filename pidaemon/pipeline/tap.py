"""The camera's newest image, for a viewer: kept only while someone watches.

The capture thread hands every frame to `offer()`, which costs one integer test while nobody
watches. While a viewer is connected it keeps a reference to the image the source returned (no
copy, no encoding: sources return a fresh array per read and nothing writes into it), and the
viewer's own thread takes it at its own rate. A viewer that falls behind simply skips frames.
"""

from __future__ import annotations

import threading
from typing import NamedTuple

import numpy as np


class RawFrame(NamedTuple):
    seq: int
    image: np.ndarray  # BGR as the source returned it; read-only for everyone


class FrameTap:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watchers = 0
        self._latest: RawFrame | None = None

    @property
    def watching(self) -> bool:
        return self._watchers > 0

    def watch(self) -> None:
        with self._lock:
            self._watchers += 1

    def unwatch(self) -> None:
        """One viewer fewer; the last one leaving drops the image."""
        with self._lock:
            self._watchers = max(0, self._watchers - 1)
            if not self._watchers:
                self._latest = None

    def offer(self, seq: int, image: np.ndarray) -> None:
        """Capture thread: the newest frame, kept only while watched."""
        if self._watchers:
            self._latest = RawFrame(seq, image)  # one reference swap, atomic under the GIL

    def latest(self) -> RawFrame | None:
        return self._latest
