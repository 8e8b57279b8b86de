"""What every frame source is: open, read, release, what it granted, whether it is still there.

The capture thread drives any source through this interface alone, so a new kind of camera (or a
test's fault-injecting one) is one class, not a branch in the capture loop. `open()` raises
OSError with a reason a user can act on; `read()` returns `(ok, image)` like cv2.VideoCapture.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any


class CameraState(enum.Enum):
    """Where a source is in its life; declared once, read by the service and every output."""

    STARTING = "starting"  # the capture thread has not tried it yet
    STREAMING = "streaming"
    WAITING = "waiting"  # missing at start, retried with backoff
    LOST = "lost"  # was streaming, vanished or stalled, retried with backoff
    ENDED = "ended"  # a video file without loop reached its end

    @property
    def is_down(self) -> bool:
        """A state systemd's STATUS should name instead of the stats line."""
        return self in (CameraState.WAITING, CameraState.LOST)


@dataclass(frozen=True)
class Grant:
    """What the source actually delivers, which may differ from what the config asked."""

    text: str  # "640x480 MJPG at 30.0 fps"
    fields: dict[str, object] = field(default_factory=dict)  # width, height, fourcc, ...
    backend: str = ""


class FrameSource(ABC):
    """One camera, stream or file. Not thread-safe: only the capture thread touches it."""

    #: Live sources pace themselves by blocking in read(); files are paced by the capture thread.
    live: bool = True
    #: Whether the config's width/height/fps are a request the source may adjust (cameras).
    negotiates: bool = False
    #: Seconds an open() may take before the source is reported as waiting (it goes on).
    open_patience: float = 3.0

    def __init__(self, device: str | int) -> None:
        self.device = device
        self.grant = Grant("")

    @abstractmethod
    def open(self) -> None:
        """Open the source and set `grant`, or raise OSError with a reason to act on."""

    @abstractmethod
    def read(self) -> tuple[bool, Any]:
        """(True, BGR image) or (False, None); returns within about a second."""

    @abstractmethod
    def release(self) -> None:
        """Close the source; safe to call when it is not open."""

    def gone(self) -> str | None:
        """Why the source can no longer come back as it was (a device node vanished), if so."""
        return None
