"""A real mosquitto on loopback for the MQTT tests, and a paho subscriber that sees what it
delivers."""

from __future__ import annotations

import itertools
import json
import os
import pwd
import queue
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

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
