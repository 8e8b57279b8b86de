"""MQTT against a real mosquitto on loopback: payloads, retained status, availability and the
last will, reconnection after the broker restarts, a broker that is down at start, credentials
and TLS. The daemon's real Service runs in-process (as a process of its own where it must be
killed); a paho subscriber checks what the broker delivers."""

from __future__ import annotations

import itertools
import queue
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from pidaemon.errors import EX_CONFIG

from .cli_inprocess import run_cli
from .conftest import PHOTO_ORDER, Daemon, base_config, pi_infer, write_config, write_video
from .inprocess import ServiceRun
from .labels import describe, photo_runs
from .mqtt_broker import MOSQUITTO_PASSWD, Broker, Message, Subscriber, free_port

_ids = itertools.count(1)
FPS = 20


def topic(name: str, node: str | None = None) -> str:
    return f"pi-infer/{node or socket.gethostname()}/{name}"


def is_(name: str, payload: str | None = None, node: str | None = None,
        retain: bool | None = None) -> Callable[[Message], bool]:
    """A message on topic `name`, optionally with that payload or retain flag."""
    return lambda m: (m.topic == topic(name, node) and payload in (None, m.payload)
                      and retain in (None, m.retain))


def mqtt_event(state: str) -> Callable[[dict], bool]:
    return lambda e: e["event"] == "mqtt" and e.get("state") == state


def received(subscriber: Subscriber) -> list[Message]:
    """Every message the subscriber has been delivered so far, without waiting for more."""
    while True:
        try:
            subscriber.seen.append(subscriber.messages.get_nowait())
        except queue.Empty:
            return subscriber.seen


@pytest.fixture
def own_broker(tmp_path):
    """`own_broker(settings)`: a mosquitto with the test's own settings, not started yet; it is
    stopped after the test's subscribers have gone (list this fixture before `subscribe`), so
    that they do not wait out a reconnect delay to a broker already stopped."""
    made: list[Broker] = []

    def make(settings: str = "allow_anonymous true\n") -> Broker:
        made.append(Broker(tmp_path, settings))
        return made[-1]
    yield make
    for broker in made:
        broker.stop()


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The five photos, 0.5 s each at 20 fps: a loop of 2.5 s."""
    return write_video(tmp_path_factory.mktemp("mqtt") / "photos.avi", PHOTO_ORDER, 0.5, FPS)


def config_file(tmp_path: Path, cache_dir: Path, mqtt_settings: dict) -> str:
    config = base_config(cache_dir, camera={"loop": True, "fps": FPS},
                         mqtt={"host": "127.0.0.1", **mqtt_settings})
    return str(write_config(tmp_path / f"c{next(_ids)}.yaml", config))


@pytest.fixture
def start(start_service, tmp_path, cache_dir, photos):
    """Start the daemon (in-process) on the looping photo video with these mqtt settings."""
    def run(**mqtt_settings) -> ServiceRun:
        path = config_file(tmp_path, cache_dir, mqtt_settings)
        return start_service("--config", path, "--source", str(photos))
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

    daemon.stop()
    assert daemon.finish(timeout=15) == 0
    subscriber.wait_for(is_("availability", "offline"))
    assert subscribe(broker.port).find(is_("availability")) == Message(
        topic("availability"), "offline", retain=True)


@pytest.mark.system
def test_last_will_says_offline_when_the_daemon_is_killed(broker, subscribe, start_daemon,
                                                           tmp_path, cache_dir, photos):
    subscriber = subscribe(broker.port)
    path = config_file(tmp_path, cache_dir, {"port": broker.port, "node_id": "killed"})
    daemon: Daemon = start_daemon("--config", path, "--source", str(photos))
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
    daemon.stop()
    assert daemon.finish(timeout=15) == 0


def test_a_broker_down_at_start_blocks_nothing(own_broker, subscribe, start):
    down = own_broker()  # not started yet
    daemon = start(port=down.port, every_frame=True, buffer=5)
    daemon.seen_or_wait(lambda e: e["event"] == "lifecycle" and e["message"].startswith("ready"))
    daemon.seen_or_wait(mqtt_event("waiting"))
    daemon.wait_for(lambda e: e["event"] == "stats" and e["processed"] >= 20)
    dropping = daemon.seen_or_wait(mqtt_event("dropping"))
    assert dropping["dropped"] > 0 and dropping["level"] == "warning"
    down.start()
    connected = daemon.seen_or_wait(mqtt_event("connected"))
    assert "after" in connected["message"]
    status = subscribe(down.port).wait_for(lambda m: is_("status")(m)
                                           and m.json()["mqtt_dropped"] > 0)
    assert status.json()["processed"] >= 20
    daemon.stop()
    assert daemon.finish(timeout=15) == 0


def test_every_frame_qos1_and_unretained_status(broker, subscribe, start):
    subscriber = subscribe(broker.port)
    daemon = start(port=broker.port, every_frame=True, qos=1, retain_status=False)
    predictions = [subscriber.wait_for(is_("prediction")).json() for _ in range(15)]
    assert any(a["classes"][0] == b["classes"][0] for a, b in itertools.pairwise(predictions))
    seqs = [p["seq"] for p in predictions]
    assert seqs == sorted(set(seqs))
    subscriber.wait_for(is_("status"))
    late = subscribe(broker.port)
    assert late.find(is_("availability")).retain
    assert not late.find(is_("status")).retain  # a live one: none was kept
    daemon.stop()
    assert daemon.finish(timeout=15) == 0


def test_username_and_password_file(tmp_path, own_broker, subscribe, start, monkeypatch):
    passwords = tmp_path / "passwords"
    subprocess.run([str(MOSQUITTO_PASSWD), "-c", "-b", str(passwords), "camera", "s3cret"],
                   check=True, capture_output=True)
    secured = own_broker(f"allow_anonymous false\npassword_file {passwords}\n")
    secured.start()
    watcher = subscribe(secured.port, login=("camera", "s3cret"))
    credentials = tmp_path / "credentials"  # as systemd's LoadCredential= provides it
    credentials.mkdir()
    (credentials / "mqtt-password").write_text("s3cret\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    good = start(port=secured.port, node_id="good", username="camera",
                 password_file="mqtt-password")
    watcher.wait_for(is_("availability", "online", node="good"))
    good.stop()
    assert good.finish(timeout=15) == 0
    watcher.wait_for(is_("availability", "offline", node="good"))
    # One daemon at a time: the events each collects are its own.
    (tmp_path / "wrong").write_text("guess\n")
    bad = start(port=secured.port, node_id="bad", username="camera",
                password_file=str(tmp_path / "wrong"))
    refused = bad.seen_or_wait(mqtt_event("refused"))
    assert "Not authorized" in refused["message"] and refused["level"] == "error"
    bad.wait_for(lambda e: e["event"] == "stats" and e["processed"] >= 10)
    bad.stop()
    assert bad.finish(timeout=15) == 0
    assert not any(m.topic == topic("availability", "bad") for m in received(watcher))


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


def test_tls_checks_the_broker_certificate(tmp_path, own_broker, subscribe, start):
    ca, cert, key = make_certificates(tmp_path)
    tls_port = free_port()
    secured = own_broker(f"allow_anonymous true\nlistener {tls_port} 127.0.0.1\n"
                         f"cafile {ca}\ncertfile {cert}\nkeyfile {key}\n")
    secured.start()
    watcher = subscribe(secured.port)  # the plain listener, for the test
    trusting = start(port=tls_port, node_id="trusting", tls=True, ca_file=str(ca))
    watcher.wait_for(is_("availability", "online", node="trusting"))
    watcher.wait_for(is_("prediction", node="trusting"))
    trusting.stop()
    assert trusting.finish(timeout=15) == 0
    # The system CAs do not know the test CA: no connection, and the pipeline carries on.
    untrusting = start(port=tls_port, node_id="untrusting", tls=True)
    untrusting.seen_or_wait(mqtt_event("waiting"))
    untrusting.wait_for(lambda e: e["event"] == "stats" and e["processed"] >= 10)
    untrusting.stop()
    assert untrusting.finish(timeout=15) == 0
    assert not any(m.topic == topic("availability", "untrusting") for m in received(watcher))


def bad_mqtt_config(tmp_path: Path, cache_dir: Path, settings: dict) -> list[str]:
    path = write_config(tmp_path / "c.yaml", base_config(
        cache_dir, mqtt={"host": "127.0.0.1", **settings}))
    return ["run", "--config", str(path), "--source", "none.avi"]


@pytest.mark.parametrize(("settings", "expected"), [
    ({"password_file": "/nonexistent/secret", "username": "u"},
     "mqtt.password_file: cannot read /nonexistent/secret"),
    ({"password_file": "/etc/hostname"}, "mqtt.password_file: needs mqtt.username"),
    ({"ca_file": "/etc/ssl/certs/ca-certificates.crt"}, "mqtt.ca_file: is only used with"),
    ({"topic_prefix": "site/#"}, "mqtt.topic_prefix: must be a topic without +, #"),
    ({"node_id": "a/b"}, "mqtt.node_id: must be one topic level"),
])
def test_mqtt_config_errors_exit_78(tmp_path, cache_dir, settings, expected, capsys):
    result = run_cli(capsys, *bad_mqtt_config(tmp_path, cache_dir, settings))
    assert result.returncode == EX_CONFIG, result.stdout + result.stderr
    assert expected in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.system
def test_a_config_error_exits_78_from_the_process(tmp_path, cache_dir):
    """A config key refused at start, through the real process: exit 78, no traceback."""
    result = pi_infer(*bad_mqtt_config(tmp_path, cache_dir, {"node_id": "a/b"}))
    assert result.returncode == EX_CONFIG, result.stdout + result.stderr
    assert "mqtt.node_id: must be one topic level" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
