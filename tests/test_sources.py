"""Each FrameSource on real inputs: a video file, a loopback network camera, V4L2 paths."""

from __future__ import annotations

import os

import pytest

from pidaemon.config import CameraConfig
from pidaemon.sources import make_source
from pidaemon.sources.network import NetworkSource
from pidaemon.sources.v4l2 import V4L2Source
from pidaemon.sources.video import VideoFileSource


def test_video_file_grants_its_size_and_reads_frames(photo_video):
    source = make_source(CameraConfig(device=str(photo_video)))
    assert isinstance(source, VideoFileSource) and not source.live
    source.open()
    try:
        assert source.grant.fields["width"] == 640 and source.grant.fields["height"] == 480
        assert source.grant.text.startswith("640x480 MJPG")
        ok, image = source.read()
        assert ok and image.shape == (480, 640, 3)
    finally:
        source.release()
    assert source.read() == (False, None), "a released source reads nothing"
    source.release()  # twice is harmless


def test_video_file_errors_name_the_problem(tmp_path):
    with pytest.raises(OSError, match="does not exist"):
        VideoFileSource(str(tmp_path / "missing.avi")).open()
    text = tmp_path / "notes.avi"
    text.write_text("not a video\n")
    with pytest.raises(OSError, match="not a video file OpenCV can read"):
        VideoFileSource(str(text)).open()


def test_network_camera_streams_and_refuses_when_offline(mjpeg_camera):
    mjpeg_camera.plug_in()
    source = make_source(CameraConfig(device=mjpeg_camera.url))
    assert isinstance(source, NetworkSource) and source.live
    source.open()
    try:
        ok, image = source.read()
        assert ok and image.shape == (480, 640, 3)
    finally:
        source.release()
    mjpeg_camera.unplug()
    with pytest.raises(OSError, match=r"cannot connect to .*camera offline"):
        NetworkSource(mjpeg_camera.url).open()


def test_v4l2_paths_missing_not_a_camera_and_vanished(tmp_path):
    with pytest.raises(OSError, match="/dev/video-none does not exist"):
        V4L2Source(CameraConfig(device="/dev/video-none")).open()
    with pytest.raises(OSError, match="not a capture device"):
        V4L2Source(CameraConfig(device="/dev/null", backend="v4l2")).open()
    node = tmp_path / "video7"
    node.write_bytes(b"")
    source = V4L2Source(CameraConfig(device=str(node), backend="v4l2"))
    assert source.gone() is None
    os.unlink(node)
    assert source.gone() == f"{node} disappeared"
