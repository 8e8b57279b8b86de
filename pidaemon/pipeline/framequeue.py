"""A bounded queue that drops the oldest item instead of blocking the producer.

A camera must never wait for inference: when the consumer falls behind, the stalest frame is
thrown away so the next `get` always returns the freshest one.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class QueueClosed(Exception):
    """Raised by `get` once the queue is closed and empty."""


class DropOldestQueue(Generic[T]):
    """Thread-safe bounded FIFO: `put` never blocks, it evicts the oldest item when full."""

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self._items: deque[T] = deque()
        self._maxsize = maxsize
        self._cond = threading.Condition()
        self._closed = False
        self.dropped = 0

    def put(self, item: T) -> bool:
        """Add `item`; returns False if an older item had to be dropped to make room."""
        with self._cond:
            if self._closed:
                raise QueueClosed
            kept_all = True
            while len(self._items) >= self._maxsize:
                self._items.popleft()
                self.dropped += 1
                kept_all = False
            self._items.append(item)
            self._cond.notify()
            return kept_all

    def get(self, timeout: float | None = None) -> T | None:
        """Oldest item, or None after `timeout` seconds; QueueClosed once closed and empty."""
        with self._cond:
            if not self._items and not self._closed:
                self._cond.wait(timeout)
            if self._items:
                return self._items.popleft()
            if self._closed:
                raise QueueClosed
            return None

    def resize(self, maxsize: int) -> None:
        """Change the bound; surplus oldest items are dropped (and counted) at once."""
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        with self._cond:
            self._maxsize = maxsize
            while len(self._items) > maxsize:
                self._items.popleft()
                self.dropped += 1

    def close(self) -> None:
        """Wake every waiter; later `put` calls fail and `get` drains what is left."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)
