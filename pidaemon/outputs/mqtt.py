"""MQTT output, the path for fleets: many daemons report to one broker.

Topics, under `<mqtt.topic_prefix>/<node>/` (node: mqtt.node_id, else the host name):
  availability  `online` (retained) on every connect; `offline` (retained) at a clean stop, and
                from the broker as the last will when the daemon dies or its link does
  status        JSON stats each output.interval, retained unless mqtt.retain_status is false
  prediction    JSON top-k when the top-1 class changes (every frame with mqtt.every_frame)
  <region>/state       a region's steady state, the plain label (retained)
  <region>/attributes  JSON: the scores that made it and since when (retained)
With `cameras:`, status, prediction and region topics are one level down, under each camera's
name (`<node>/<camera>/status`, `<node>/<camera>/<region>/state`); availability stays per node.
With mqtt.discovery, Home Assistant's discovery config too (outputs.homeassistant).

A broker that is down, slow or gone must never hold up the pipeline. The results thread only
appends to a bounded buffer; a publisher thread hands messages to paho, whose own network thread
(loop_start) connects, reconnects with capped exponential backoff and writes. While the broker is
unreachable, predictions wait in the buffer (the oldest dropped and counted once it is full) and
only the newest status waits, since a status replaces the one before it; likewise only the
newest message of each retained topic (states, discovery), which is sent again on reconnect.

An endpoint that accepts the TCP connection but never answers CONNECT (not an MQTT broker: an
HTTP port, a wrong port forwarded somewhere) would otherwise go unnoticed while paho gives up
after the keep-alive time and retries: it is named once, then retried like a broker that is down.
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt

from pidaemon.config.credentials import CredentialError, read_secret
from pidaemon.errors import ConfigError, first_line
from pidaemon.eventlog import emit
from pidaemon.outputs.homeassistant import component_id, config_topic, device_config
from pidaemon.pipeline.sink import Sink

if TYPE_CHECKING:
    from pidaemon.config import MqttConfig
    from pidaemon.pipeline.frames import Result
    from pidaemon.pipeline.snapshot import RegionInfo, Snapshot
    from pidaemon.pipeline.state import StateChange

RECONNECT_MIN = 1  # seconds; paho doubles the wait after each failed attempt
RECONNECT_MAX = 30
STOP_TIMEOUT = 1.0  # for each step of stop(), so SIGTERM still exits within a few seconds


class Link(Enum):
    """The broker link as last reported in the log (each change is said once)."""

    CONNECTING = "connecting"  # before the first answer
    UP = "up"  # connected and subscribed
    DOWN = "down"  # unreachable or lost: retrying
    REFUSED = "refused"  # the broker said no (credentials)
    SILENT = "silent"  # a TCP peer that never answered CONNECT


@dataclass
class _Message:
    topic: str
    payload: str
    retain: bool
    qos: int | None = None  # None: mqtt.qos


def read_password(name: str) -> str:
    """The password in `name`; a bare file name is looked up among systemd's credentials."""
    try:
        return read_secret(name)
    except CredentialError as exc:
        raise ConfigError(f"mqtt.password_file: {exc}") from None


class MqttSink(Sink):
    def __init__(self, config: MqttConfig) -> None:
        assert config.host is not None
        self.config = config
        self.broker = f"{config.host}:{config.port}"
        self.node = config.node_id or socket.gethostname()
        self.client_id = config.client_id or f"pi-infer-{self.node}"
        self.base = f"{config.topic_prefix}/{self.node}"
        self.dropped = 0
        self._reported_dropped = 0
        self._predictions: deque[_Message] = deque()
        self._statuses: dict[str, _Message] = {}  # per topic: only the newest waits
        self._pending: dict[str, _Message] = {}  # retained topics: only the newest is sent
        self._current: dict[str, _Message] = {}  # region states, sent again on reconnect
        self._regions: tuple[RegionInfo, ...] = ()
        self._removed: set[str] = set()  # component ids to remove from Home Assistant
        self._discovery_topic = config_topic(config.discovery_prefix, self.node)
        self._wake = threading.Condition()
        self._stopping = False
        self._started = False
        self._last_top1: dict[str | None, int | None] = {}  # per camera
        self._link = Link.CONNECTING
        self._ever_connected = False
        self._down_since: float | None = None
        self._dropped_when_down = 0
        self._socket_opened_at: float | None = None  # a TCP link waiting for its CONNACK
        self._client = self._make_client()
        self._thread = threading.Thread(target=self._publish_loop, name="mqtt", daemon=True)

    def _make_client(self) -> mqtt.Client:
        config = self.config
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             protocol=mqtt.MQTTv311)
        if config.username is not None:
            password = read_password(config.password_file) if config.password_file else None
            client.username_pw_set(config.username, password)
        if config.tls:
            try:
                client.tls_set(ca_certs=config.ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"mqtt.ca_file: cannot load {config.ca_file}: "
                                  f"{first_line(exc)}") from None
        client.will_set(f"{self.base}/availability", "offline", qos=1, retain=True)
        client.reconnect_delay_set(RECONNECT_MIN, RECONNECT_MAX)
        client.max_queued_messages_set(config.buffer)  # paho's own queue, for QoS 1 and 2
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_socket_open = self._on_socket_open
        return client

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        """Connect in the background: a broker that is down delays nothing."""
        self._client.connect_async(self.config.host, self.config.port, self.config.keepalive)
        self._client.loop_start()
        self._thread.start()
        self._started = True

    def stop(self) -> None:
        """Flush what the broker can still take, say `offline`, disconnect; bounded in time."""
        if not self._started:
            return
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        self._thread.join(STOP_TIMEOUT)
        if self._client.is_connected():
            info = self._client.publish(f"{self.base}/availability", "offline", qos=1,
                                        retain=True)
            try:
                info.wait_for_publish(STOP_TIMEOUT)
            except (RuntimeError, ValueError):  # the link went down meanwhile
                pass
        self._client.disconnect()
        # loop_stop() joins paho's thread without a timeout; it may be mid-connect.
        stopper = threading.Thread(target=self._client.loop_stop, daemon=True)
        stopper.start()
        stopper.join(STOP_TIMEOUT)

    # -- hooks (results thread): only append to the buffer ------------------------------------
    def on_result(self, result: Result, labels: list[str]) -> None:
        top1 = result.classes[0] if result.classes else None
        if top1 == self._last_top1.get(result.camera, -1) and not self.config.every_frame:
            return
        self._last_top1[result.camera] = top1
        payload = {"time": round(time.time(), 3), "seq": result.seq,
                   "latency_ms": round(result.latency_ms, 2),
                   "inference_ms": round(result.inference_ms, 2), "classes": result.classes,
                   "labels": [labels[c] for c in result.classes],
                   "scores": [round(s, 4) for s in result.scores],
                   "label": labels[top1] if top1 is not None else None,
                   "score": round(result.scores[0], 4) if result.scores else None}
        if result.camera is not None:
            payload["camera"] = result.camera
        message = _Message(f"{self._under(result.camera)}/prediction", json.dumps(payload),
                           retain=False)
        with self._wake:
            if len(self._predictions) >= self.config.buffer:
                self._predictions.popleft()
                self.dropped += 1
            self._predictions.append(message)
            self._wake.notify()

    def on_state(self, change: StateChange) -> None:
        attributes = {"score": change.score, "scores": change.scores,
                      "previous": change.previous, "since": _iso(change.since)}
        with self._wake:
            for message in (
                    _Message(f"{self._under(change.camera)}/{change.region}/state", change.state,
                             retain=True),
                    _Message(f"{self._under(change.camera)}/{change.region}/attributes",
                             json.dumps(attributes),
                             retain=True)):
                self._current[message.topic] = self._pending[message.topic] = message
            self._wake.notify()

    def on_regions(self, regions: tuple[RegionInfo, ...]) -> None:
        """A region that is gone loses its Home Assistant entity, then its retained state."""
        names = {r.topic for r in regions}
        with self._wake:
            gone = {r.topic for r in self._regions} - names
            self._regions = regions
            self._removed = (self._removed | {component_id(t) for t in gone}) - {
                component_id(t) for t in names}
            self._queue_discovery()
            self._clear(topic for name in sorted(gone) for topic in self._region_topics(name))

    def _region_topics(self, region_topic: str) -> tuple[str, str]:
        return (f"{self.base}/{region_topic}/state", f"{self.base}/{region_topic}/attributes")

    def _clear(self, topics: Iterable[str]) -> None:
        """Under the lock: empty retained payloads, queued after everything pending, the
        discovery config that removes their entities included: Home Assistant still subscribed
        to a topic would log the empty payload as an invalid state."""
        for topic in topics:
            self._current.pop(topic, None)
            self._pending.pop(topic, None)
            self._pending[topic] = _Message(topic, "", retain=True)

    def _queue_discovery(self) -> None:
        """Under the lock: the device config, or its removal once no region is left."""
        if not self.config.discovery or not (self._regions or self._removed):
            return
        payload = (json.dumps(device_config(self.node, self.base, self._regions,
                                            self._removed, self.config.qos))
                   if self._regions else "")
        topic = self._discovery_topic
        self._pending.pop(topic, None)  # re-inserted last: after the states it announces
        self._pending[topic] = _Message(topic, payload, retain=True, qos=1)
        self._wake.notify()

    def _under(self, camera: str | None) -> str:
        """Where a camera's topics go: `<prefix>/<node>`, or `<prefix>/<node>/<camera>`."""
        return self.base if camera is None else f"{self.base}/{camera}"

    def on_stats(self, snapshot: Snapshot) -> None:
        if snapshot.cameras:  # each camera had its own status
            return
        with self._wake:
            dropped = self.dropped
            payload = {"time": round(time.time(), 3), **snapshot.status_fields(),
                       "mqtt_dropped": dropped}
            if snapshot.camera is not None:
                payload["camera"] = snapshot.camera
            topic = f"{self._under(snapshot.camera)}/status"
            self._statuses[topic] = _Message(topic, json.dumps(payload),
                                             retain=self.config.retain_status)
            self._wake.notify()
        if dropped > self._reported_dropped:
            emit("mqtt", f"mqtt: dropped {dropped - self._reported_dropped} predictions "
                 f"({dropped} in total) that {self.broker} could not take in time; they wait in "
                 f"a buffer of mqtt.buffer={self.config.buffer}", logging.WARNING,
                 state="dropping", broker=self.broker, dropped=dropped)
            self._reported_dropped = dropped

    # -- the publisher thread -----------------------------------------------------------------
    def _next(self) -> _Message | None:
        """The next message to send once connected; None when stopping with nothing sendable."""
        with self._wake:
            while True:
                pending = (bool(self._predictions) or bool(self._pending)
                           or bool(self._statuses))
                # "up" once on_connect has subscribed: a retained config of an earlier run
                # then arrives before this run's replaces it.
                if pending and self._link is Link.UP and self._client.is_connected():
                    if self._pending:
                        return self._pending.pop(next(iter(self._pending)))
                    if self._predictions:
                        return self._predictions.popleft()
                    return self._statuses.pop(next(iter(self._statuses)))
                if self._stopping:
                    return None
                self._wake.wait()

    def _publish_loop(self) -> None:
        while (message := self._next()) is not None:
            qos = self.config.qos if message.qos is None else message.qos
            info = self._client.publish(message.topic, message.payload, qos=qos,
                                        retain=message.retain)
            # QoS 0 is lost unless sent now; QoS 1/2 wait in paho's queue unless it is full.
            lost = info.rc == mqtt.MQTT_ERR_QUEUE_SIZE or (
                self.config.qos == 0 and info.rc != mqtt.MQTT_ERR_SUCCESS)
            if lost and message.topic.endswith("/prediction"):
                with self._wake:
                    self.dropped += 1

    # -- paho callbacks (paho's network thread) -----------------------------------------------
    def _on_socket_open(self, _client: mqtt.Client, _userdata: Any, _sock: Any) -> None:
        self._socket_opened_at = time.monotonic()

    def _on_connect(self, client: mqtt.Client, _userdata: Any, _flags: Any,
                    reason: Any, _properties: Any) -> None:
        self._socket_opened_at = None
        if reason.is_failure:
            if self._link is not Link.REFUSED:
                emit("mqtt", f"mqtt: {self.broker} refused the connection: {reason} (check "
                     f"mqtt.username and mqtt.password_file); retrying with backoff "
                     f"{RECONNECT_MIN} s up to {RECONNECT_MAX} s", logging.ERROR,
                     state="refused", broker=self.broker, reason=str(reason))
                self._went_down(Link.REFUSED)
            return
        client.publish(f"{self.base}/availability", "online", qos=1, retain=True)
        if self.config.discovery:
            # Home Assistant's birth message, and the config a previous run left retained.
            client.subscribe([(f"{self.config.discovery_prefix}/status", 1),
                              (self._discovery_topic, 1)])
        with self._wake:
            for topic, message in self._current.items():
                self._pending.setdefault(topic, message)
            self._queue_discovery()
            lost = self.dropped - self._dropped_when_down
        after = ("" if self._down_since is None else
                 f" after {time.monotonic() - self._down_since:.1f} s of retrying ({lost} "
                 f"predictions dropped meanwhile)")
        if self._ever_connected:
            emit("mqtt", f"mqtt: reconnected to {self.broker}{after}", state="reconnected",
                 broker=self.broker, dropped=lost)
        else:
            emit("mqtt", f"mqtt: connected to {self.broker} as {self.client_id}{after}; "
                 f"publishing under {self.base}/", state="connected", broker=self.broker,
                 topic=self.base)
        self._ever_connected = True
        self._link = Link.UP
        self._down_since = None
        with self._wake:
            self._wake.notify_all()

    def _on_message(self, _client: mqtt.Client, _userdata: Any,
                    message: mqtt.MQTTMessage) -> None:
        if message.topic == f"{self.config.discovery_prefix}/status":
            if message.payload == b"online":
                with self._wake:
                    self._queue_discovery()
            return
        if message.topic != self._discovery_topic or not message.retain:
            return
        # Retained from an earlier run: remove the regions it has that this run does not.
        try:
            components = json.loads(message.payload or b"{}").get("components", {})
        except (ValueError, AttributeError):
            return
        with self._wake:
            current = {component_id(r.topic) for r in self._regions}
            stale = {name: entry for name, entry in components.items()
                     if isinstance(entry, dict) and len(entry) > 1 and name not in current}
            if set(stale) - self._removed:
                self._removed |= set(stale)
                self._queue_discovery()
                # The topics that config named: with cameras a component `garden_gate` is the
                # region `garden/gate`, which its id alone cannot tell.
                self._clear(topic for entry in stale.values() for topic in self._own_topics(entry))

    def _own_topics(self, component: dict) -> list[str]:
        """A retained component's state and attributes topics, if they are under our base."""
        topics = (component.get("state_topic"), component.get("json_attributes_topic"))
        return [t for t in topics if isinstance(t, str) and t.startswith(f"{self.base}/")]

    def _on_connect_fail(self, _client: mqtt.Client, _userdata: Any) -> None:
        if self._link in (Link.CONNECTING, Link.UP):
            emit("mqtt", f"mqtt: cannot reach {self.broker}; retrying with backoff "
                 f"{RECONNECT_MIN} s up to {RECONNECT_MAX} s, predictions wait in a buffer of "
                 f"{self.config.buffer}", logging.WARNING, state="waiting", broker=self.broker)
            self._went_down(Link.DOWN)

    def _on_disconnect(self, _client: mqtt.Client, _userdata: Any, _flags: Any,
                       reason: Any, _properties: Any) -> None:
        opened_at, self._socket_opened_at = self._socket_opened_at, None
        if opened_at is not None and not self._stopping:
            if self._link is not Link.SILENT:
                emit("mqtt", f"mqtt: {self.broker} accepted the connection but sent no CONNACK "
                     f"within {time.monotonic() - opened_at:.0f} s; is it an MQTT broker? "
                     f"Retrying with backoff {RECONNECT_MIN} s up to {RECONNECT_MAX} s",
                     logging.WARNING, state="silent", broker=self.broker)
                self._went_down(Link.SILENT)
            return
        if self._link is Link.UP and not self._stopping:
            emit("mqtt", f"mqtt: lost the connection to {self.broker} ({reason}); retrying with "
                 f"backoff {RECONNECT_MIN} s up to {RECONNECT_MAX} s, predictions wait in a "
                 f"buffer of {self.config.buffer}", logging.WARNING, state="lost",
                 broker=self.broker, reason=str(reason))
            self._went_down(Link.DOWN)

    def _went_down(self, link: Link) -> None:
        self._link = link
        if self._down_since is None:
            self._down_since = time.monotonic()
            with self._wake:
                self._dropped_when_down = self.dropped


def _iso(unix: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(unix)) + f".{int(unix % 1 * 1000):03d}Z"
