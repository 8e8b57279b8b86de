"""Home Assistant MQTT discovery: every region as a sensor of one device.

One device-based discovery config (`<prefix>/device/<node>/config`, retained) carries `device`,
`origin`, the shared availability and one `sensor` component per region, keyed by the region's
name. A region whose model has at most MAX_ENUM_OPTIONS labels (a model trained on your own
labels) is an enum sensor listing them, so Home Assistant offers them in automations; one of
the 1000-label ImageNet model is a plain text sensor rather than a 1000-entry list.
Home Assistant passes only availability down to the components, so each carries `qos` itself.
A region that is gone is published once more as `{"platform": "sensor"}` alone, which tells
Home Assistant to remove that entity; with no region left the config is cleared with an empty
retained payload, which removes the device.
"""

from __future__ import annotations

import re

from pidaemon import __version__
from pidaemon.pipeline.snapshot import RegionInfo

# HA shows `unknown` for the payload None; `unknown` is not an option of an enum sensor.
VALUE_TEMPLATE = "{{ None if value == 'unknown' else value }}"
MAX_ENUM_OPTIONS = 50  # more labels than this: a text sensor, not a list to scroll


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
    """The discovery payload: a sensor per region, a platform-only entry per removed component
    (`removed` holds component ids)."""
    ident = f"pi-infer_{object_id(node)}"
    components: dict[str, dict] = {name: {"platform": "sensor"} for name in sorted(removed)}
    for region in regions:
        key = component_id(region.topic)
        component: dict = {
            "platform": "sensor",
            "name": key.replace("_", " "),
            "unique_id": f"{ident}_{key}",
            "state_topic": f"{base}/{region.topic}/state",
            "json_attributes_topic": f"{base}/{region.topic}/attributes",
            "value_template": VALUE_TEMPLATE,
            "icon": "mdi:cctv",
        }
        options = list(dict.fromkeys(region.labels))
        if len(options) <= MAX_ENUM_OPTIONS:
            component.update(device_class="enum", options=options)
        if qos:
            component["qos"] = qos
        components[key] = component
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
