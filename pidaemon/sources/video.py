"""Video files, read as fast as asked: the capture thread paces them at camera.fps."""

from __future__ import annotations

import os
from typing import Any

import cv2

from pidaemon.sources.opencv import OpenCVSource


class VideoFileSource(OpenCVSource):
    live = False

    def _open_capture(self) -> tuple[Any, str]:
        path = str(self.device)
        if not os.path.exists(path):
            raise OSError(f"{path} does not exist")
        cap = cv2.VideoCapture(path)
        if not cap.isOpened():
            raise OSError(f"cannot decode {path} (not a video file OpenCV can read)")
        return cap, cap.getBackendName()
