"""USB and other V4L2 cameras (`/dev/videoN` or an index), asked for a size, rate and format."""

from __future__ import annotations

import os
from typing import Any

import cv2

from pidaemon.config import CameraConfig
from pidaemon.sources.opencv import OpenCVSource


class V4L2Source(OpenCVSource):
    negotiates = True

    def __init__(self, config: CameraConfig) -> None:
        super().__init__(config.device)
        self.config = config

    def _open_capture(self) -> tuple[Any, str]:
        config, device = self.config, self.device
        if isinstance(device, str) and not os.path.exists(device):
            raise OSError(f"{device} does not exist")
        # OpenCV's V4L2 backend refuses the timeout properties (it fails to open with them);
        # its select() timeout comes from OPENCV_VIDEOIO_V4L_SELECT_TIMEOUT (cli.py).
        cap = cv2.VideoCapture(device, cv2.CAP_V4L2)
        if not cap.isOpened():
            raise OSError(f"cannot open {device} with V4L2 (busy, or not a capture device; is "
                          f"the user in the 'video' group?)")
        # The pixel format must be set before size and rate, which depend on it.
        if config.fourcc:
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*config.fourcc.ljust(4)[:4]))
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, config.width)
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, config.height)
        cap.set(cv2.CAP_PROP_FPS, config.fps)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        return cap, "V4L2"

    def gone(self) -> str | None:
        if isinstance(self.device, str) and not os.path.exists(self.device):
            return f"{self.device} disappeared"
        return None
