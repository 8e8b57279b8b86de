"""MQTT against a real mosquitto on loopback: payloads, retained status, availability and the
last will, reconnection after the broker restarts, a broker that is down at start, credentials
and TLS. The daemon runs as a user runs it; a paho subscriber checks what the broker delivers."""

from __future__ import annotations

import itertools
import json
import os
import pwd
import queue
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from pidaemon.errors import EX_CONFIG

from .conftest import Daemon, base_config, pi_infer, write_config
from .labels import describe, photo_runs

MOSQUITTO = Path("/usr/sbin/mosquitto")
MOSQUITTO_PASSWD = Path("/usr/bin/mosquitto_passwd")
_ids = itertools.count(1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Broker:
    """mosquitto from the Debian package with its own config, log and port; stopped by PID."""

    def __init__(self, directory: Path, settings: str = "allow_anonymous true\n") -> None:
        if not MOSQUITTO.exists():
            pytest.fail(f"{MOSQUITTO} is missing: sudo apt-get install mosquitto")
        self.directory = directory
        self.port = free_port()
        self.log = directory / "mosquitto.log"
        self.config = directory / "mosquitto.conf"
        # `user` = whoever runs the tests, so that as root it can still read the temp files.
        self.config.write_text(f"user {pwd.getpwuid(os.getuid()).pw_name}\npersistence false\n"
                               f"log_dest stderr\nlistener {self.port} 127.0.0.1\n{settings}")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([str(MOSQUITTO), "-c", str(self.config)], stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"mosquitto exited: {self.log.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"mosquitto is not listening: {self.log.read_text()}")

    def kill(self) -> None:
        """SIGKILL: the broker vanishes without a goodbye to its clients."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class Message:
    topic: str
    payload: str
    retain: bool

    def json(self) -> dict:
        return json.loads(self.payload)


class Subscriber:
    """A paho client subscribed to every topic; it resubscribes after a broker restart."""

    def __init__(self, port: int, login: tuple[str, str] | None = None) -> None:
        self.messages: queue.Queue[Message] = queue.Queue()
        self.seen: list[Message] = []
        subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=f"pi-infer-test-{os.getpid()}-{next(_ids)}")
        if login is not None:
            self.client.username_pw_set(*login)
        self.client.on_connect = lambda client, *_: client.subscribe("#", qos=1)
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = lambda _c, _u, m: self.messages.put(
            Message(m.topic, m.payload.decode(), bool(m.retain)))
        self.client.reconnect_delay_set(1, 2)
        self.client.connect_async("127.0.0.1", port)
        self.client.loop_start()
        assert subscribed.wait(15), "the test subscriber could not subscribe"

    def wait_for(self, predicate: Callable[[Message], bool], timeout: float = 60) -> Message:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                message = self.messages.get(timeout=left)
            except queue.Empty:
                break
            self.seen.append(message)
            if predicate(message):
                return message
        raise AssertionError(f"no matching message within {timeout} s; last: {self.seen[-6:]}")

    def find(self, predicate: Callable[[Message], bool], timeout: float = 60) -> Message:
        """The first matching message, whether already received or still to come."""
        return next((m for m in self.seen if predicate(m)), None) or self.wait_for(predicate,
                                                                                  timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A running broker; tests may kill and restart it."""
    started = Broker(tmp_path)
    started.start()
    yield started
    started.stop()


@pytest.fixture
def subscribe() -> Iterator[Callable[..., Subscriber]]:
    """Subscribers for a test; closed at its end."""
    made: list[Subscriber] = []

    def make(port: int, login: tuple[str, str] | None = None) -> Subscriber:
        made.append(Subscriber(port, login))
        return made[-1]
    yield make
    for subscriber in made:
        subscriber.close()


def topic(name: str, node: str | None = None) -> str:
    return f"pi-infer/{node or socket.gethostname()}/{name}"


def is_(name: str, payload: str | None = None, node: str | None = None,
        retain: bool | None = None) -> Callable[[Message], bool]:
    """A message on topic `name`, optionally with that payload or retain flag."""
    return lambda m: (m.topic == topic(name, node) and payload in (None, m.payload)
                      and retain in (None, m.retain))


def mqtt_event(state: str) -> Callable[[dict], bool]:
    return lambda e: e["event"] == "mqtt" and e.get("state") == state


@pytest.fixture
def start(start_daemon, tmp_path, cache_dir, photo_video):
    """Start the daemon on the looping photo video with these mqtt settings."""
    def run(env: dict | None = None, **mqtt_settings) -> Daemon:
        config = base_config(cache_dir, camera={"loop": True},
                             mqtt={"host": "127.0.0.1", **mqtt_settings})
        path = write_config(tmp_path / f"c{next(_ids)}.yaml", config)
        return start_daemon("--config", str(path), "--source", str(photo_video), env=env)
    return run


def test_status_predictions_and_availability(broker, subscribe, start):
    subscriber = subscribe(broker.port)
    daemon = start(port=broker.port)
    subscriber.wait_for(is_("availability", "online"))
    predictions = []
    while len(photo_runs(predictions)) < 6:
        predictions.append(subscriber.wait_for(is_("prediction")).json())
    # On change of the top-1 class only: the photos in order, each one message or a few (cats).
    assert photo_runs(predictions)[:6] == ["grace_hopper.jpg", "cat", "coffee.png", "bird.bmp",
                                           "cat", "grace_hopper.jpg"]
    assert all(a["classes"][0] != b["classes"][0] for a, b in itertools.pairwise(predictions))
    first = predictions[0]
    assert len(first["classes"]) == len(first["labels"]) == len(first["scores"]) == 5
    assert first["label"] == first["labels"][0]
    assert "military uniform" in first["labels"], describe(first)  # the top 5 (tests/labels.py)
    assert first["latency_ms"] > 0 and first["inference_ms"] > 0 and first["time"] > 0
    status = subscriber.wait_for(lambda m: is_("status")(m) and m.json()["processed"] > 0).json()
    assert status["captured"] >= status["processed"] > 0 and status["fps"] > 0
    assert status["mqtt_dropped"] == 0 and "fps" in status["status"]

    late = subscribe(broker.port)  # retained: what a dashboard that starts later sees at once
    assert late.find(is_("status")).retain
    assert late.find(is_("availability")) == Message(topic("availability"), "online", True)

    daemon.signal(signal.SIGTERM)
    assert daemon.finish(timeout=15) == 0
    subscriber.wait_for(is_("availability", "offline"))
    assert subscribe(broker.port).find(is_("availability")) == Message(
        topic("availability"), "offline", retain=True)


def test_last_will_says_offline_when_the_daemon_is_killed(broker, subscribe, start):
    subscriber = subscribe(broker.port)
    daemon = start(port=broker.port, node_id="killed")
    subscriber.wait_for(is_("availability", "online", node="killed"))
    daemon.kill()  # SIGKILL: no chance to say goodbye; the broker sends the will
    subscriber.wait_for(is_("availability", "offline", node="killed"))
    late = subscribe(broker.port)
    assert late.find(is_("availability", node="killed")).payload == "offline"


def test_reconnects_after_the_broker_restarts(broker, subscribe, start):
    subscriber = subscribe(broker.port)
    daemon = start(port=broker.port)
    subscriber.wait_for(is_("availability", "online"))
    broker.kill()
    daemon.wait_for(mqtt_event("lost"))
    processed = daemon.wait_for(lambda e: e["event"] == "stats")["processed"]
    # Capture and inference carry on without the broker.
    daemon.wait_for(lambda e: e["event"] == "stats" and e["processed"] >= processed + 20)
    broker.start()
    daemon.wait_for(mqtt_event("reconnected"))
    again = subscribe(broker.port)  # the restarted broker kept nothing: this is all new
    again.find(is_("availability", "online"))
    assert again.find(is_("status")).json()["processed"] > processed
    again.find(is_("prediction"))


def test_a_broker_down_at_start_blocks_nothing(tmp_path, subscribe, start):
    down = Broker(tmp_path)  # not started yet
    daemon = start(port=down.port, every_frame=True, buffer=5)
    daemon.seen_or_wait(lambda e: e["event"] == "lifecycle" and e["message"].startswith("ready"))
    daemon.seen_or_wait(mqtt_event("waiting"))
    daemon.wait_for(lambda e: e["event"] == "stats" and e["processed"] >= 20)
    dropping = daemon.seen_or_wait(mqtt_event("dropping"))
    assert dropping["dropped"] > 0 and dropping["level"] == "warning"
    down.start()
    try:
        connected = daemon.seen_or_wait(mqtt_event("connected"))
        assert "after" in connected["message"]
        status = subscribe(down.port).wait_for(lambda m: is_("status")(m)
                                               and m.json()["mqtt_dropped"] > 0)
        assert status.json()["processed"] >= 20
    finally:
        down.stop()


def test_every_frame_qos1_and_unretained_status(broker, subscribe, start):
    subscriber = subscribe(broker.port)
    start(port=broker.port, every_frame=True, qos=1, retain_status=False)
    predictions = [subscriber.wait_for(is_("prediction")).json() for _ in range(15)]
    assert any(a["classes"][0] == b["classes"][0] for a, b in itertools.pairwise(predictions))
    seqs = [p["seq"] for p in predictions]
    assert seqs == sorted(set(seqs))
    subscriber.wait_for(is_("status"))
    late = subscribe(broker.port)
    assert late.find(is_("availability")).retain
    assert not late.find(is_("status")).retain  # a live one: none was kept


def test_username_and_password_file(tmp_path, subscribe, start):
    passwords = tmp_path / "passwords"
    subprocess.run([str(MOSQUITTO_PASSWD), "-c", "-b", str(passwords), "camera", "s3cret"],
                   check=True, capture_output=True)
    secured = Broker(tmp_path, f"allow_anonymous false\npassword_file {passwords}\n")
    secured.start()
    try:
        watcher = subscribe(secured.port, login=("camera", "s3cret"))
        credentials = tmp_path / "credentials"  # as systemd's LoadCredential= provides it
        credentials.mkdir()
        (credentials / "mqtt-password").write_text("s3cret\n")
        env = {**os.environ, "CREDENTIALS_DIRECTORY": str(credentials)}
        good = start(env=env, port=secured.port, node_id="good", username="camera",
                     password_file="mqtt-password")
        watcher.wait_for(is_("availability", "online", node="good"))
        (tmp_path / "wrong").write_text("guess\n")
        bad = start(port=secured.port, node_id="bad", username="camera",
                    password_file=str(tmp_path / "wrong"))
        refused = bad.seen_or_wait(mqtt_event("refused"))
        assert "Not authorized" in refused["message"] and refused["level"] == "error"
        bad.wait_for(lambda e: e["event"] == "stats" and e["processed"] >= 10)
        good.signal(signal.SIGTERM)
        assert good.finish(timeout=15) == 0
        watcher.wait_for(is_("availability", "offline", node="good"))
    finally:
        secured.stop()


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1 it signed: (ca, cert, key)."""
    ca, ca_key = directory / "ca.crt", directory / "ca.key"
    cert, key, csr = directory / "server.crt", directory / "server.key", directory / "server.csr"
    san = directory / "san.cnf"
    san.write_text("subjectAltName=IP:127.0.0.1\n")
    for command in (
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca,
         "-days", "2", "-subj", "/CN=pi-infer test CA"],
        ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj",
         "/CN=127.0.0.1"],
        ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out",
         cert, "-days", "2", "-extfile", san],
    ):
        subprocess.run(["openssl", *map(str, command)], check=True, capture_output=True)
    return ca, cert, key


def test_tls_checks_the_broker_certificate(tmp_path, subscribe, start):
    ca, cert, key = make_certificates(tmp_path)
    tls_port = free_port()
    secured = Broker(tmp_path, f"allow_anonymous true\nlistener {tls_port} 127.0.0.1\n"
                               f"cafile {ca}\ncertfile {cert}\nkeyfile {key}\n")
    secured.start()
    try:
        watcher = subscribe(secured.port)  # the plain listener, for the test
        start(port=tls_port, node_id="trusting", tls=True, ca_file=str(ca))
        watcher.wait_for(is_("availability", "online", node="trusting"))
        watcher.wait_for(is_("prediction", node="trusting"))
        # The system CAs do not know the test CA: no connection, and the pipeline carries on.
        untrusting = start(port=tls_port, node_id="untrusting", tls=True)
        untrusting.seen_or_wait(mqtt_event("waiting"))
        untrusting.wait_for(lambda e: e["event"] == "stats" and e["processed"] >= 10)
        assert not any(m.topic == topic("availability", "untrusting") for m in watcher.seen)
    finally:
        secured.stop()


@pytest.mark.parametrize(("settings", "expected"), [
    ({"password_file": "/nonexistent/secret", "username": "u"},
     "mqtt.password_file: cannot read /nonexistent/secret"),
    ({"password_file": "/etc/hostname"}, "mqtt.password_file: needs mqtt.username"),
    ({"ca_file": "/etc/ssl/certs/ca-certificates.crt"}, "mqtt.ca_file: is only used with"),
    ({"topic_prefix": "site/#"}, "mqtt.topic_prefix: must be a topic without +, #"),
    ({"node_id": "a/b"}, "mqtt.node_id: must be one topic level"),
])
def test_mqtt_config_errors_exit_78(tmp_path, cache_dir, settings, expected):
    path = write_config(tmp_path / "c.yaml", base_config(
        cache_dir, mqtt={"host": "127.0.0.1", **settings}))
    result = pi_infer("run", "--config", str(path), "--source", "none.avi")
    assert result.returncode == EX_CONFIG, result.stdout + result.stderr
    assert expected in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
