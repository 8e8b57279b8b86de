"""The one place that turns `camera.device` and `camera.backend` into a FrameSource."""

from __future__ import annotations

from collections.abc import Callable

from pidaemon.config import CameraConfig
from pidaemon.sources.base import FrameSource
from pidaemon.sources.network import NetworkSource
from pidaemon.sources.picamera2 import Picamera2Source, wants_picamera2
from pidaemon.sources.v4l2 import V4L2Source
from pidaemon.sources.video import VideoFileSource


def looks_like(device: str | int) -> str:
    """`v4l2` (a /dev path or an index), `network` (a URL) or `file`, from the name alone."""
    if isinstance(device, int) or str(device).startswith("/dev/"):
        return "v4l2"
    if "://" in str(device):
        return "network"
    return "file"


SourceFactory = Callable[[CameraConfig], FrameSource]  # make_source's shape


def make_source(config: CameraConfig) -> FrameSource:
    """The source `config` names; `camera.backend` forces a kind where the name is ambiguous."""
    if wants_picamera2(config):
        return Picamera2Source(config)
    kind = looks_like(config.device)
    if config.backend == "v4l2" or (kind == "v4l2" and config.backend != "file"):
        return V4L2Source(config)
    if kind == "network":
        return NetworkSource(config.device)
    return VideoFileSource(config.device)
