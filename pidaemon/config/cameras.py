"""`cameras:`: several named cameras served by one daemon and one model.

Each camera takes the very keys of `camera:` (read with the same declarations) plus its own
`regions:`. A name becomes an MQTT topic level, a journal field value and a Prometheus label,
hence only a-z, 0-9, _ and -. Two cameras on one device would fight over it, so that is refused.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from pidaemon.config.regions import Problem, Region, parse_regions
from pidaemon.config.schema import CameraConfig, NamedCamera, csi_index

NAME = re.compile(r"[a-z0-9_-]{1,32}")
MAX_CAMERAS = 16

ReadSection = Callable[[type, Any, tuple[str, ...], Problem], Any]


def device_key(device: str | int) -> str:
    """One spelling per device: 0 and /dev/video0 are the same node, csi and csi:0 too."""
    if isinstance(device, int):
        return f"/dev/video{device}"
    index = csi_index(device)
    return f"csi:{index}" if index is not None else device


def parse_cameras(data: Any, problem: Problem, read_section: ReadSection
                  ) -> tuple[NamedCamera, ...]:
    """The `cameras:` mapping in file order; ConfigError naming the bad key."""
    if not isinstance(data, dict) or not data:
        raise problem(("cameras",), "must be a mapping of camera names to camera settings "
                                    "(device, width, ...), e.g. {door: {device: /dev/video0}}")
    if len(data) > MAX_CAMERAS:
        raise problem(("cameras",), f"at most {MAX_CAMERAS} cameras, got {len(data)}")
    cameras: list[NamedCamera] = []
    devices: dict[str, str] = {}
    for name, value in data.items():
        path = ("cameras", str(name))
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise problem(path, "names a camera in MQTT topics, journal fields and metrics: "
                                "use 1 to 32 of a-z, 0-9, _ and - (e.g. front_door)")
        entry = dict(value) if isinstance(value, dict) else value
        regions: tuple[Region, ...] = ()
        if isinstance(entry, dict) and "regions" in entry:
            regions = parse_regions(entry.pop("regions"),
                                    lambda p, m, path=path: problem((*path[:2], *p), m))
        camera = read_section(CameraConfig, entry, path, problem)
        key = device_key(camera.device)
        if key in devices:
            raise problem((*path, "device"), f"{camera.device} is already camera "
                                             f"{devices[key]}'s device; give each camera its own")
        devices[key] = name
        cameras.append(NamedCamera(name, camera, regions))
    return tuple(cameras)


# An example for the generated docs (etc/pi-infer.yaml).
CAMERAS_EXAMPLE = """\
# cameras: several cameras, one model. Instead of camera: (not both), name each camera and give
# it the keys of camera: (and its own regions:). One capture thread and queue per camera; the
# inference thread takes the freshest frame of each camera in turn. Names (a-z, 0-9, _, -) appear
# in the log (camera=...), MQTT topics <topic_prefix>/<node>/<name>/... and metric labels.
# A reload reopens only a changed camera; cameras may be added or removed.
#cameras:
#  door:
#    device: /dev/video0
#    fourcc: MJPG
#  garden:
#    device: rtsp://192.168.1.20:554/stream1
#    regions:
#      gate: {box: [0.5, 0.2, 1.0, 1.0]}
"""
