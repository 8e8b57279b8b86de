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

    def __init__(self, maxsize: int, cond: threading.Condition | None = None) -> None:
        """`cond` lets one consumer wait on several queues at once (FairQueues)."""
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self._items: deque[T] = deque()
        self._maxsize = maxsize
        self._cond = cond or threading.Condition()
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

    def pop_oldest(self) -> T | None:
        """The oldest item without waiting, or None when empty."""
        with self._cond:
            return self._items.popleft() if self._items else None

    @property
    def closed(self) -> bool:
        return self._closed

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


class FairQueues(Generic[T]):
    """One drop-oldest queue per camera, all waited on together by one consumer.

    `take` hands out the oldest item of every queue that has one, starting after the queue
    served first last time: each camera gets its turn however fast the others are.
    """

    def __init__(self, maxsize: int) -> None:
        self._cond = threading.Condition()
        self._maxsize = maxsize
        self._queues: dict[str | None, DropOldestQueue[T]] = {}
        self._start = 0

    def add(self, name: str | None) -> DropOldestQueue[T]:
        with self._cond:
            queue: DropOldestQueue[T] = DropOldestQueue(self._maxsize, self._cond)
            self._queues[name] = queue
            return queue

    def remove(self, name: str | None) -> None:
        with self._cond:
            self._queues.pop(name, None)

    def take(self, timeout: float) -> list[T]:
        """One item of each non-empty queue (empty after `timeout`); QueueClosed once closed."""
        with self._cond:
            queues = list(self._queues.values())
            if not any(len(q) for q in queues):
                if all(q.closed for q in queues) and queues:
                    raise QueueClosed
                self._cond.wait(timeout)
                queues = list(self._queues.values())
            n = len(queues)
            order = [queues[(self._start + i) % n] for i in range(n)] if n else []
            taken = [item for q in order if (item := q.pop_oldest()) is not None]
            if taken:
                self._start = (self._start + 1) % n
            elif queues and all(q.closed for q in queues):
                raise QueueClosed
            return taken

    def resize(self, maxsize: int) -> None:
        self._maxsize = maxsize
        for queue in list(self._queues.values()):
            queue.resize(maxsize)

    def close(self) -> None:
        for queue in list(self._queues.values()):
            queue.close()

    def __len__(self) -> int:
        with self._cond:
            return sum(len(q) for q in self._queues.values())
