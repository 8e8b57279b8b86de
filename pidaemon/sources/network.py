"""Network cameras (rtsp://, http MJPEG, ...) through FFmpeg, with open and read timeouts."""

from __future__ import annotations

from typing import Any

import cv2

from pidaemon.sources.opencv import OpenCVSource

READ_TIMEOUT_MS = 1000  # a read returns within this even when the camera stalls
OPEN_TIMEOUT_MS = 5000


class NetworkSource(OpenCVSource):
    def _open_capture(self) -> tuple[Any, str]:
        timeouts = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, OPEN_TIMEOUT_MS,
                    cv2.CAP_PROP_READ_TIMEOUT_MSEC, READ_TIMEOUT_MS]
        cap = cv2.VideoCapture(str(self.device), cv2.CAP_FFMPEG, timeouts)
        if not cap.isOpened():
            raise OSError(f"cannot connect to {self.device} (camera offline, wrong URL, or a "
                          f"format FFmpeg cannot read)")
        return cap, cap.getBackendName()
