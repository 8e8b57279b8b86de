"""The live page's own thread: the camera's newest frame, annotated and encoded, to its viewers.

It costs nothing while nobody looks: with no open stream the thread sleeps on a condition and
the frame tap keeps nothing. While someone watches it encodes at most `max_fps` frames a second,
once for all viewers, and pushes each into every viewer's Stream, where a newer frame replaces one
not yet sent: a slow viewer gets fewer frames, never a queue.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from pidaemon.pipeline.tap import FrameTap
from pidaemon.web.http import Stream
from pidaemon.web.jpeg import Box, annotate, encode

BOUNDARY = "frame"
SNAPSHOT_WAIT = 3.0  # seconds a /snapshot.jpg waits for a frame before giving up
POLL = 0.01  # how often a new camera frame is looked for once one is due
STOP_TIMEOUT = 1.0

# The top-k lines, a footer and the regions' boxes with their states, drawn on frames.
Caption = Callable[[], tuple[list[str], str, list[Box]]]


class FrameStreamer:
    def __init__(self, tap: FrameTap, max_fps: float, caption: Caption,
                 headers: dict[str, str]) -> None:
        self.tap = tap
        self.period = 1.0 / max_fps
        self.caption = caption
        self.headers = headers
        self.encoded = 0  # frames encoded since start: stays put while nobody watches
        self._cond = threading.Condition()
        self._streams: list[Stream] = []
        self._snapshots: list[tuple[Stream, float]] = []
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="web-frames", daemon=True)

    @property
    def viewers(self) -> int:
        return sum(not s.closed for s in self._streams)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if not self._thread.is_alive():  # never started: the server could not bind
            return
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(STOP_TIMEOUT)

    def mjpeg(self) -> Stream:
        """A new viewer of /stream.mjpg (the server may still refuse it at its stream cap)."""
        stream = Stream(f"multipart/x-mixed-replace; boundary={BOUNDARY}", dict(self.headers))
        with self._cond:
            self._streams.append(stream)
            self._cond.notify()
        return stream

    def snapshot(self) -> Stream:
        """One JPEG: the newest frame, or the next one if none is at hand."""
        stream = Stream("image/jpeg", dict(self.headers))
        with self._cond:
            self._snapshots.append((stream, time.monotonic() + SNAPSHOT_WAIT))
            self._cond.notify()
        return stream

    def _run(self) -> None:
        watching = False
        jpeg: bytes | None = None
        last_seq = -1
        next_due = 0.0
        while True:
            with self._cond:
                self._prune(time.monotonic())
                while not (self._streams or self._snapshots or self._stopping):
                    if watching:
                        self.tap.unwatch()  # the capture thread keeps nothing any more
                        watching, jpeg, last_seq = False, None, -1
                    self._cond.wait()
                if self._stopping:
                    break
                if not watching:
                    self.tap.watch()
                    watching = True
                streams, snapshots = list(self._streams), list(self._snapshots)
            now = time.monotonic()
            frame = self.tap.latest()
            if frame is not None and frame.seq != last_seq and now >= next_due:
                lines, footer, boxes = self.caption()
                jpeg = encode(annotate(frame.image, lines, footer, boxes))
                self.encoded += 1
                last_seq = frame.seq
                next_due = max(next_due + self.period, now)
                part = (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: "
                        f"{len(jpeg)}\r\n\r\n").encode() + jpeg + b"\r\n"
                for stream in streams:
                    stream.push(part)
            if jpeg is not None and snapshots:
                with self._cond:
                    self._snapshots = [s for s in self._snapshots if s not in snapshots]
                for stream, _ in snapshots:
                    stream.push(jpeg)
                    stream.close()
            with self._cond:
                if not self._stopping:
                    self._cond.wait(max(next_due - time.monotonic(), POLL))
        if watching:
            self.tap.unwatch()
        for stream in [*self._streams, *(s for s, _ in self._snapshots)]:
            stream.close()

    def _prune(self, now: float) -> None:
        """Forget viewers that left; end snapshots that found no frame in time."""
        self._streams = [s for s in self._streams if not s.closed]
        waiting = []
        for stream, deadline in self._snapshots:
            if stream.closed:
                continue
            if now >= deadline:
                stream.close()  # the camera gave no frame: an empty body, then the close
                continue
            waiting.append((stream, deadline))
        self._snapshots = waiting
