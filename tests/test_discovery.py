"""Home Assistant discovery as the real mosquitto delivers it from the MQTT sink, in-process:
the order of a removal (the config that removes an entity before the empty payloads that clear
its topics), `qos` in every component, enum sensors only for short label lists, and the topics
of a camera's region removed in an earlier run."""

from __future__ import annotations

import json
import time

from pidaemon.config import MqttConfig
from pidaemon.outputs.homeassistant import MAX_ENUM_OPTIONS, device_config
from pidaemon.outputs.mqtt import MqttSink
from pidaemon.pipeline.snapshot import RegionInfo
from pidaemon.pipeline.state import StateChange

from .mqtt_broker import Message, Subscriber

NODE = "cam1"
BASE = f"pi-infer/{NODE}"
CONFIG_TOPIC = f"homeassistant/device/{NODE}/config"
DOOR = RegionInfo("door", (0.0, 0.0, 0.5, 1.0), ["open", "closed"])
GATE = RegionInfo("gate", (0.5, 0.0, 1.0, 1.0), ["open", "closed"])


def sink_for(port: int, **settings) -> MqttSink:
    config = MqttConfig(host="127.0.0.1", port=port, node_id=NODE, discovery=True, **settings)
    sink = MqttSink(config)
    sink.start()
    return sink


def change(region: str, state: str, camera: str | None = None) -> StateChange:
    return StateChange(region, state, "unknown", 0.9, {state: 0.9}, time.time(), camera)


def until(subscriber: Subscriber, topic: str, payload_test=lambda p: True) -> Message:
    return subscriber.wait_for(lambda m: m.topic == topic and payload_test(m.payload), timeout=15)


def test_a_removal_is_announced_before_its_topics_are_cleared(broker, subscribe):
    subscriber = subscribe(broker.port)
    sink = sink_for(broker.port)
    try:
        sink.on_regions((DOOR, GATE))
        sink.on_state(change("door", "open"))
        sink.on_state(change("gate", "closed"))
        for topic in (CONFIG_TOPIC, f"{BASE}/gate/attributes"):
            subscriber.find(lambda m, topic=topic: m.topic == topic)
        seen = len(subscriber.seen)

        sink.on_regions((DOOR,))
        until(subscriber, f"{BASE}/gate/attributes", lambda p: p == "")
        removal = [(m.topic, m.payload) for m in subscriber.seen[seen:]
                   if m.topic.startswith((f"{BASE}/gate/", CONFIG_TOPIC))]
        config = json.loads(removal[0][1])
        assert removal[0][0] == CONFIG_TOPIC, removal
        assert config["components"]["gate"] == {"platform": "sensor"}
        assert config["components"]["door"]["state_topic"] == f"{BASE}/door/state"
        assert removal[1:] == [(f"{BASE}/gate/state", ""), (f"{BASE}/gate/attributes", "")]

        seen = len(subscriber.seen)
        sink.on_regions(())
        until(subscriber, f"{BASE}/door/attributes", lambda p: p == "")
        last = [(m.topic, m.payload) for m in subscriber.seen[seen:]]
        assert last == [(CONFIG_TOPIC, ""), (f"{BASE}/door/state", ""),
                        (f"{BASE}/door/attributes", "")], "the device goes first, then its topics"
    finally:
        sink.stop()


def test_every_component_carries_qos_when_it_is_above_0(broker, subscribe):
    subscriber = subscribe(broker.port)
    sink = sink_for(broker.port, qos=1)
    try:
        sink.on_regions((DOOR, GATE))
        config = until(subscriber, CONFIG_TOPIC).json()
        assert {name: c.get("qos") for name, c in config["components"].items()} == {
            "door": 1, "gate": 1}
    finally:
        sink.stop()
    unset = device_config(NODE, BASE, (DOOR,), set(), 0)
    assert "qos" not in unset["components"]["door"], "QoS 0 is Home Assistant's default"


def test_enum_options_only_for_a_short_list_of_labels():
    many = RegionInfo("yard", (0, 0, 1, 1), [f"class {i}" for i in range(1000)])
    limit = RegionInfo("shed", (0, 0, 1, 1), [f"class {i}" for i in range(MAX_ENUM_OPTIONS)])
    components = device_config(NODE, BASE, (DOOR, many, limit), set(), 0)["components"]
    assert components["door"]["device_class"] == "enum"
    assert components["door"]["options"] == ["open", "closed"]
    assert len(components["shed"]["options"]) == MAX_ENUM_OPTIONS
    assert "options" not in components["yard"] and "device_class" not in components["yard"]
    assert components["yard"]["state_topic"] == f"{BASE}/yard/state", "a plain text sensor"


def test_a_camera_region_left_by_an_earlier_run_is_cleared_on_its_own_topics(broker, subscribe):
    earlier = sink_for(broker.port)
    subscriber = subscribe(broker.port)
    try:
        garden_gate = RegionInfo("gate", (0, 0, 1, 1), ["open", "closed"], "garden")
        earlier.on_regions((garden_gate,))
        earlier.on_state(change("gate", "open", camera="garden"))
        until(subscriber, f"{BASE}/garden/gate/attributes")
        subscriber.find(lambda m: m.topic == CONFIG_TOPIC and '"garden_gate"' in m.payload)
    finally:
        earlier.stop()

    seen = len(subscriber.seen)
    later = sink_for(broker.port)  # this run's regions: only the door
    try:
        later.on_regions((DOOR,))
        until(subscriber, f"{BASE}/garden/gate/attributes", lambda p: p == "")
        after = [(m.topic, m.payload) for m in subscriber.seen[seen:]]
        assert (f"{BASE}/garden/gate/state", "") in after
        assert not any(topic.startswith(f"{BASE}/garden_gate") for topic, _ in after)
        removal = [json.loads(p) for t, p in after if t == CONFIG_TOPIC and '"garden_gate"' in p]
        assert removal and removal[-1]["components"]["garden_gate"] == {"platform": "sensor"}
    finally:
        later.stop()
