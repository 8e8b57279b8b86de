"""Home Assistant MQTT discovery: every region as an enum sensor of one device.

One device-based discovery config (`<prefix>/device/<node>/config`, retained) carries `device`,
`origin`, the shared availability and one `sensor` component per region, keyed by the region's
name. A region that is gone is published once more as `{"platform": "sensor"}` alone, which
tells Home Assistant to remove that entity; with no region left the config is cleared with an
empty retained payload, which removes the device.
"""

from __future__ import annotations

import re

from pidaemon import __version__
from pidaemon.pipeline.snapshot import RegionInfo

# HA shows `unknown` for the payload None; `unknown` is not an option of an enum sensor.
VALUE_TEMPLATE = "{{ None if value == 'unknown' else value }}"


def object_id(node: str) -> str:
    """The node as a discovery topic level ([a-zA-Z0-9_-] only)."""
    return re.sub(r"[^a-zA-Z0-9_-]", "_", node)


def component_id(topic: str) -> str:
    """A region's component key: its name, or `<camera>_<name>` with cameras."""
    return topic.replace("/", "_")


def config_topic(prefix: str, node: str) -> str:
    return f"{prefix}/device/{object_id(node)}/config"


def device_config(node: str, base: str, regions: tuple[RegionInfo, ...], removed: set[str],
                  qos: int) -> dict:
    """The discovery payload: a sensor per region, a platform-only entry per removed one."""
    ident = f"pi-infer_{object_id(node)}"
    components: dict[str, dict] = {component_id(name): {"platform": "sensor"}
                                   for name in sorted(removed)}
    for region in regions:
        key = component_id(region.topic)
        components[key] = {
            "platform": "sensor",
            "name": key.replace("_", " "),
            "unique_id": f"{ident}_{key}",
            "device_class": "enum",
            "options": list(dict.fromkeys(region.labels)),
            "state_topic": f"{base}/{region.topic}/state",
            "json_attributes_topic": f"{base}/{region.topic}/attributes",
            "value_template": VALUE_TEMPLATE,
            "icon": "mdi:cctv",
        }
    return {
        "device": {"identifiers": [ident], "name": f"pi-infer {node}",
                   "manufacturer": "pi-infer", "model": "camera classifier",
                   "sw_version": __version__},
        "origin": {"name": "pi-infer", "sw_version": __version__},
        "availability_topic": f"{base}/availability",
        "payload_available": "online",
        "payload_not_available": "offline",
        "qos": qos,
        "components": components,
    }
