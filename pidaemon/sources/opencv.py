"""The part of the V4L2, network and video file sources that OpenCV's VideoCapture does for all."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import cv2

from pidaemon.sources.base import FrameSource, Grant


def describe_fourcc(code: float) -> str:
    value = int(code)
    chars = "".join(chr((value >> (8 * i)) & 0xFF) for i in range(4))
    return chars.strip("\0 ") or "unknown"


class OpenCVSource(FrameSource):
    """A source read through one cv2.VideoCapture; subclasses say how to open it."""

    def __init__(self, device: str | int) -> None:
        super().__init__(device)
        self._cap: Any = None

    @abstractmethod
    def _open_capture(self) -> tuple[Any, str]:
        """An opened VideoCapture and its backend name, or OSError."""

    def open(self) -> None:
        cap, backend = self._open_capture()
        width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = cap.get(cv2.CAP_PROP_FPS)
        fourcc = describe_fourcc(cap.get(cv2.CAP_PROP_FOURCC))
        self.grant = Grant(f"{width}x{height} {fourcc} at {fps:.1f} fps",
                           {"width": width, "height": height, "fourcc": fourcc,
                            "camera_fps": round(fps, 2), "backend": backend}, backend)
        self._cap = cap

    def read(self) -> tuple[bool, Any]:
        if self._cap is None:
            return False, None
        return self._cap.read()

    def release(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
