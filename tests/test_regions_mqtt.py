"""Region states and Home Assistant discovery through a real mosquitto: the retained state and
attributes topics, the device config and its keys, the re-publish on Home Assistant's birth
message, and the removal of a region by reload and by a restart with fewer regions. The daemon's
real Service runs in-process."""

from __future__ import annotations

import paho.mqtt.client as mqtt

from .conftest import base_config, write_config
from .regionvideo import LEFT, RIGHT, write_pairs

NODE = "cam1"
BASE = f"pi-infer/{NODE}"
CONFIG_TOPIC = f"homeassistant/device/{NODE}/config"


def on(topic: str, retain: bool | None = None):
    return lambda m: m.topic == topic and retain in (None, m.retain)


def publish(port: int, topic: str, payload: str) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.connect("127.0.0.1", port)
    client.loop_start()
    client.publish(topic, payload, qos=1).wait_for_publish(10)
    client.disconnect()
    client.loop_stop()


def run(start_service, tmp_path, cache_dir, port, video, regions, name):
    config = base_config(cache_dir, camera={"device": str(video), "loop": True},
                         mqtt={"host": "127.0.0.1", "port": port, "node_id": NODE,
                               "discovery": True})
    config["regions"] = regions
    path = write_config(tmp_path / f"{name}.yaml", config)
    return start_service("--config", str(path)), path, config


def test_states_and_discovery(tmp_path, cache_dir, broker, subscribe, start_service):
    video = write_pairs(tmp_path / "pair.avi", [("coffee.png", "bird.bmp")], 10)
    both = {"left": {"box": LEFT, "state": {"consecutive": 2}},
            "right": {"box": RIGHT, "state": {"consecutive": 2}}}
    watcher = subscribe(broker.port)
    daemon, _, _ = run(start_service, tmp_path, cache_dir, broker.port, video, both, "a")
    found = watcher.wait_for(on(CONFIG_TOPIC)).json()
    assert set(found) >= {"device", "origin", "components", "availability_topic"}
    assert found["origin"]["name"] == "pi-infer" and found["device"]["identifiers"]
    assert found["availability_topic"] == f"{BASE}/availability"
    left = found["components"]["left"]
    # The 1000 ImageNet labels: a text sensor, not an enum with a 1000-entry list.
    assert left["platform"] == "sensor" and "device_class" not in left and "options" not in left
    assert left["state_topic"] == f"{BASE}/left/state"
    assert left["json_attributes_topic"] == f"{BASE}/left/attributes"
    assert left["unique_id"] != found["components"]["right"]["unique_id"]
    assert watcher.wait_for(on(f"{BASE}/left/state")).payload == "espresso"
    assert watcher.find(on(f"{BASE}/right/state")).payload == "chickadee"
    attributes = watcher.find(on(f"{BASE}/left/attributes")).json()
    assert attributes["scores"]["espresso"] == attributes["score"] and "T" in attributes["since"]

    # A late subscriber gets the retained config and states, as Home Assistant does.
    late = subscribe(broker.port)
    assert late.wait_for(on(f"{BASE}/left/state", retain=True)).payload == "espresso"
    assert late.find(on(CONFIG_TOPIC, retain=True)).json()["components"].keys() == {"left",
                                                                                   "right"}
    # Home Assistant's birth message: the config again.
    publish(broker.port, "homeassistant/status", "online")
    again = late.wait_for(on(CONFIG_TOPIC, retain=False)).json()
    assert again["components"].keys() == {"left", "right"}

    # Restart with fewer regions: the right sensor is removed and its state cleared.
    daemon.stop()
    assert daemon.finish() == 0
    watcher.seen.clear()
    daemon, path, config = run(start_service, tmp_path, cache_dir, broker.port, video,
                               {"left": both["left"]}, "b")
    removal = watcher.wait_for(lambda m: m.topic == CONFIG_TOPIC and m.payload and m.json()
                               ["components"].get("right") == {"platform": "sensor"})
    assert removal.json()["components"]["left"]["state_topic"] == f"{BASE}/left/state"
    assert watcher.find(on(f"{BASE}/right/state")).payload == ""

    # Reload without the left region: removed the same way, the right one comes back.
    config["regions"] = {"right": both["right"]}
    write_config(path, config)
    daemon.reload()
    assert daemon.wait_for(lambda e: e["event"] == "reload")["changed"] == "regions"
    removal = watcher.wait_for(lambda m: m.topic == CONFIG_TOPIC and m.payload and m.json()
                               ["components"].get("left") == {"platform": "sensor"})
    assert removal.json()["components"]["right"]["state_topic"] == f"{BASE}/right/state"
    assert watcher.find(on(f"{BASE}/left/state")).payload == ""
    assert watcher.wait_for(on(f"{BASE}/right/state")).payload == "chickadee"
    daemon.stop()
    assert daemon.finish() == 0
    final = subscribe(broker.port)
    kept = final.wait_for(on(CONFIG_TOPIC, retain=True)).json()
    assert kept["components"]["right"]["platform"] == "sensor"
    assert kept["components"]["left"] == {"platform": "sensor"}
