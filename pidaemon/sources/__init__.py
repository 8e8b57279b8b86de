"""Frame sources: one FrameSource interface, one class per kind, one factory."""

from pidaemon.sources.base import CameraState, FrameSource, Grant
from pidaemon.sources.factory import SourceFactory, make_source

__all__ = ["CameraState", "FrameSource", "Grant", "SourceFactory", "make_source"]
