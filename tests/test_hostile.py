"""Hostile inputs and faults, through the real CLI and daemon; extend it with each new feature
(the live page, training data, regions, cameras) by asking what a hostile peer or file does to it.

Config bombs, deep nesting, duplicate keys and odd config files are in test_config_hostile.py;
HTTP floods, idle and resetting clients in test_webserver.py. Here: reloads that fail in
unforeseen ways or are cut short by SIGTERM, model and cache files that cannot be used or
removed, sources that block in open(), silent and resetting MQTT peers, a closed stdout, and
signals before the daemon is ready. Every hostile input is made by the test.

The daemon runs in-process (start_service) where no process boundary is needed; what needs one
is marked system: signal timing, signals before start-up, a closed stdout, exit 78 without a
traceback, and a cache the service's user cannot write (run as `nobody`).
"""

from __future__ import annotations

import os
import pickle
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pidaemon.bench.notify_listener import NotifyListener
from pidaemon.config import InferenceConfig, ModelConfig
from pidaemon.errors import EX_CONFIG
from pidaemon.model.classifier import cache_key, load_classifier, select_engine

from .cli_inprocess import logged, run_cli
from .conftest import (
    REPO,
    WEIGHTS,
    Daemon,
    base_config,
    http_get,
    pi_infer,
    write_config,
    write_video,
)
from .fakes import build_small_model, wait_until
from .inprocess import ServiceRun

STOP_PROMISE = 2.0  # docs/reliability.md: SIGTERM ends the daemon within 2 s, model loading too


def is_ready(event: dict) -> bool:
    return event["event"] == "lifecycle" and event["message"].startswith("ready")


def looping(cache_dir: Path, video: Path, **sections: dict) -> dict:
    return base_config(cache_dir, camera={"loop": True, "device": str(video)}, **sections)


def stop(daemon: Daemon) -> float:
    """SIGTERM; returns the seconds to exit, after checking it was clean."""
    sent = time.monotonic()
    daemon.signal(signal.SIGTERM)
    code = daemon.proc.wait(timeout=30)
    took = time.monotonic() - sent
    daemon.finish()
    assert code == 0, daemon.stderr[-2000:]
    assert daemon.events[-1]["message"] == "stopped"
    return took


def stop_service(daemon: ServiceRun) -> float:
    """What SIGTERM does, in-process; returns the seconds until run() returned, after checking
    it was clean."""
    sent = time.monotonic()
    daemon.stop()
    code = daemon.finish(timeout=30)
    took = time.monotonic() - sent
    assert code == 0
    assert daemon.events[-1]["message"] == "stopped"
    return took


# -- reloads ------------------------------------------------------------------------------------
def int_keyed_weights(path: Path) -> Path:
    """A file torch.load(weights_only=True) accepts whose keys make torch raise AttributeError."""
    import torch

    torch.save({1: torch.zeros(1)}, path)
    return path


def test_a_reload_that_raises_the_unforeseen_keeps_the_daemon(tmp_path, cache_dir, classifier,
                                                               photo_video, start_service):
    path = tmp_path / "c.yaml"
    cfg = looping(cache_dir, photo_video, output={"every_frame": True})
    write_config(path, cfg)
    daemon = start_service("--config", str(path))
    daemon.wait_for(lambda e: e["event"] == "prediction")
    cfg["model"]["weights"] = str(int_keyed_weights(tmp_path / "int-keys.pth"))
    write_config(path, cfg)
    daemon.reload()
    failed = daemon.wait_for(lambda e: e["event"] == "reload", timeout=120)
    assert failed["level"] == "error" and failed["error"] == "AttributeError", failed
    assert failed["message"].startswith("reload failed, keeping the running configuration: "
                                        "unexpected AttributeError:")
    after = len(daemon.of("prediction"))
    daemon.wait_for(lambda e: len(daemon.of("prediction")) >= after + 3)
    stop_service(daemon)
    # The same file at start-up: one line and exit 78, not a traceback and a restart loop.
    again = start_service("--config", str(path))
    assert again.finish(timeout=120) == EX_CONFIG
    [error] = again.of("error")
    assert "cannot load the model (unexpected AttributeError" in error["message"], error
    assert not any("Traceback" in e["message"] for e in again.events), again.events


@pytest.mark.system
def test_weights_that_raise_the_unforeseen_end_the_process_with_78(tmp_path, cache_dir):
    path = write_config(tmp_path / "c.yaml", base_config(cache_dir, model={
        "weights": str(int_keyed_weights(tmp_path / "int-keys.pth"))}))
    result = pi_infer("run", "--config", str(path), timeout=120)
    assert result.returncode == EX_CONFIG, result.stderr
    assert "cannot load the model (unexpected AttributeError" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.system
def test_sigterm_during_a_reloads_model_build_stops_within_2_s(tmp_path, cache_dir, classifier,
                                                                photo_video, start_daemon):
    path = tmp_path / "c.yaml"
    cfg = looping(cache_dir, photo_video)
    write_config(path, cfg)
    daemon = start_daemon("--config", str(path))
    daemon.wait_for(lambda e: e["event"] == "stats" and e["processed"] > 0)
    cfg["model"]["cache_dir"] = str(tmp_path / "empty-cache")  # the reload builds the model
    write_config(path, cfg)
    daemon.signal(signal.SIGHUP)
    daemon.wait_for(lambda e: e["event"] == "model" and e.get("state") == "loading")
    time.sleep(0.3)
    took = stop(daemon)
    assert not any("reloaded" in e["message"] for e in daemon.of("model")), "load too quick"
    assert any(e["message"] == "stopping: signal received (abandoning the reload in progress)"
               for e in daemon.events)
    print(f"SIGTERM during a reload's model build: exit after {took:.2f} s")
    assert took < STOP_PROMISE, f"SIGTERM took {took:.2f} s"


# -- model and cache files ----------------------------------------------------------------------
class RunsACommand:
    """Unpickled without weights_only, this would call os.system('true')."""

    def __reduce__(self):
        return (os.system, ("true",))


def evil_pickle(path: Path) -> Path:
    """A pickle that would run os.system when loaded without weights_only."""
    path.write_bytes(pickle.dumps(RunsACommand(), protocol=2))
    return path


@pytest.mark.parametrize(("make", "expected"), [
    (evil_pickle, "(Trying to load unsupported GLOBAL posix.system"),
    (lambda p: os.mkfifo(p) or p, "is not a regular file (a FIFO, socket or device)"),
], ids=["code-in-pickle", "fifo"])
def test_weights_that_cannot_be_used_say_why(tmp_path, capsys, make, expected):
    weights = make(tmp_path / "weights.pth")
    config = write_config(tmp_path / "c.yaml", base_config(tmp_path / "cache", model={
        "weights": str(weights)}))
    result = run_cli(capsys, "prepare", "--config", str(config))
    assert result.returncode == EX_CONFIG, result.stderr
    assert f"model.weights: {weights}: " in result.stderr and expected in result.stderr
    assert "weights_only" not in result.stderr


def entry_name() -> str:
    """The file name of the compiled model of WEIGHTS on the default engine."""
    return cache_key(ModelConfig(weights=str(WEIGHTS)), select_engine("auto")).filename


def cache_entry(directory: Path, session_cache: Path) -> Path:
    """A real compiled-model entry: the session's (conftest.classifier compiled it)."""
    directory.mkdir()
    return Path(shutil.copy(session_cache / entry_name(), directory / entry_name()))


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A scratch directory other users can read (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="pi-infer-hostile-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def as_unprivileged(args: list[str]) -> tuple[list[str], dict]:
    """`args` run as a user who cannot write root's files (nobody), or as we are if not root."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "HOME": "/nonexistent"}
    if os.geteuid() != 0:
        return args, env
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv is needed to drop root for this test")
    nobody = pwd.getpwnam("nobody")
    return ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups",
            *args], env


@pytest.mark.system
def test_a_cache_entry_that_can_neither_be_used_nor_removed(shared_dir, cache_dir, classifier,
                                                            photo_video):
    cache = shared_dir / "cache"
    video = shared_dir / "photos.avi"
    shutil.copy(photo_video, video)
    config = write_config(shared_dir / "c.yaml", base_config(
        cache, camera={"device": str(video)}, model={"cache_dir": str(cache)}))
    config.chmod(0o644)
    entry = cache_entry(cache, cache_dir)
    # A truncated entry in a directory the service user cannot write.
    entry.write_bytes(entry.read_bytes()[:1000])
    cache.chmod(0o755 if os.geteuid() == 0 else 0o555)
    args, env = as_unprivileged([sys.executable, "-m", "pidaemon", "run", "--config",
                                 str(config), "--duration", "1"])
    try:
        result = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env,
                                cwd=shared_dir)
    finally:
        cache.chmod(0o755)
    assert result.returncode == 0, result.stderr + result.stdout
    assert (f"model cache {entry} cannot be loaded" in result.stdout
            and "cannot be removed (Permission denied); building the model in memory"
            in result.stdout), result.stdout
    assert "ready in" in result.stdout and "Traceback" not in result.stderr
    assert entry.stat().st_size == 1000  # skipped, not replaced


def test_a_directory_where_a_cache_entry_belongs_is_skipped(tmp_path):
    cache = tmp_path / "cache"
    entry = cache / entry_name()
    entry.mkdir(parents=True)
    with logged() as lines:
        loaded = load_classifier(ModelConfig(weights=str(WEIGHTS), cache_dir=str(cache)),
                                 InferenceConfig(threads=1), build=build_small_model)
    assert (f"model cache {entry} is not a regular file and cannot be removed (Is a directory)"
            in "\n".join(lines)), lines
    assert loaded.description.startswith("built from")
    assert entry.is_dir()


# -- sources ------------------------------------------------------------------------------------
@pytest.fixture
def fifo(tmp_path) -> Iterator[Path]:
    """A FIFO as a camera. At the end a writer comes and goes, so that an open() still waiting
    for one (in a thread the stopped daemon left behind) returns."""
    path = tmp_path / "camera"
    os.mkfifo(path)
    yield path
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:  # nobody is waiting to read it
        pass


def start_on_fifo(tmp_path, cache_dir, fifo, start_service):
    """The daemon with a FIFO as its camera and /healthz served; (daemon, metrics URL)."""
    path = write_config(tmp_path / "c.yaml", base_config(
        cache_dir, camera={"device": str(fifo)},
        metrics={"enabled": True, "listen": "127.0.0.1:0"}))
    daemon = start_service("--config", str(path))
    return daemon, daemon.wait_for(lambda e: e["event"] == "metrics")["url"]


def test_a_fifo_nobody_writes_neither_holds_ready_nor_shutdown(tmp_path, cache_dir, classifier,
                                                               fifo, start_service):
    daemon, url = start_on_fifo(tmp_path, cache_dir, fifo, start_service)
    waiting = daemon.wait_for(lambda e: e["event"] == "camera")
    assert waiting["state"] == "waiting" and waiting["level"] == "warning"
    assert "opening it has not finished after 3 s" in waiting["message"]
    ready = daemon.wait_for(is_ready)
    assert f"waiting for camera {fifo}: opening it has not finished" in ready["message"]
    status, body = http_get(f"{url}/healthz")
    assert status == 503 and body.startswith(f"waiting: waiting for camera {fifo}"), body
    took = stop_service(daemon)
    assert took < STOP_PROMISE, f"stopping took {took:.2f} s"


def test_a_fifo_that_gets_a_writer_streams_and_turns_healthy(tmp_path, cache_dir, classifier,
                                                             fifo, start_service):
    video = write_video(tmp_path / "clip.avi", ["coffee.png", "bird.bmp", "chelsea.png"], 1.0)
    daemon, url = start_on_fifo(tmp_path, cache_dir, fifo, start_service)
    daemon.wait_for(is_ready)
    assert http_get(f"{url}/healthz")[0] == 503

    def write() -> None:  # a program that starts feeding the FIFO late, like a recorder
        with fifo.open("wb") as sink, video.open("rb") as source:
            shutil.copyfileobj(source, sink)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    recovered = daemon.wait_for(lambda e: e["event"] == "camera" and e["state"] != "waiting")
    assert recovered["state"] == "recovered", recovered
    daemon.wait_for(lambda e: e["event"] == "stats" and e["processed"] > 0)
    assert http_get(f"{url}/healthz") == (200, "ok\n")
    assert daemon.finish(timeout=60) == 0  # the video in the FIFO ended: a clean stop
    assert any(e["message"] == "stopping: the video file ended" for e in daemon.events)
    writer.join(5)


# -- MQTT peers that are not brokers ------------------------------------------------------------
class FakeBroker:
    """A TCP port that accepts connections and then says nothing, or resets each one."""

    def __init__(self, reset: bool) -> None:
        self.reset = reset
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.held: list[socket.socket] = []
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        deadline = time.monotonic() + 240
        while self.running and time.monotonic() < deadline:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            if self.reset:  # RST instead of FIN
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
                conn.close()
            else:
                self.held.append(conn)

    def close(self) -> None:
        self.running = False
        self.thread.join(2)
        for conn in self.held:
            conn.close()
        self.sock.close()


@pytest.mark.parametrize("reset", [False, True], ids=["silent", "reset"])
def test_an_endpoint_that_is_no_mqtt_broker_is_named_and_retried(tmp_path, cache_dir, classifier,
                                                                  photo_video, start_service,
                                                                  reset):
    peer = FakeBroker(reset)
    try:
        path = write_config(tmp_path / "c.yaml", looping(
            cache_dir, photo_video, mqtt={"host": "127.0.0.1", "port": peer.port,
                                          "keepalive": 5}))
        daemon = start_service("--config", str(path))
        warned = daemon.wait_for(lambda e: e["event"] == "mqtt", timeout=60)
        assert warned["level"] == "warning", warned
        if warned["state"] == "silent":  # a reset before CONNECT went out is "cannot reach"
            assert (f"mqtt: 127.0.0.1:{peer.port} accepted the connection but sent no CONNACK "
                    f"within") in warned["message"] and "is it an MQTT broker?" in warned["message"]
        else:
            assert reset and warned["state"] == "waiting", warned
        wait_until(lambda: peer.accepted >= 3, timeout=60)  # else the daemon stopped retrying
        daemon.drain()
        states = [e["state"] for e in daemon.of("mqtt")]
        assert len(states) == len(set(states)), states  # once per symptom, not per attempt
        assert daemon.of("stats")[-1]["processed"] > 0
        stop_service(daemon)
    finally:
        peer.close()


# -- the process itself -------------------------------------------------------------------------
@pytest.mark.system
def test_a_closed_stdout_neither_kills_nor_floods(tmp_path, cache_dir, classifier, photo_video):
    path = write_config(tmp_path / "c.yaml", looping(cache_dir, photo_video))
    notify = NotifyListener(tmp_path / "notify.sock")
    proc = subprocess.Popen([sys.executable, "-m", "pidaemon", "run", "--config", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO,
                            env=notify.env(dict(os.environ)))
    try:
        assert proc.stdout is not None and proc.stdout.readline()  # `| head -1`
        proc.stdout.close()
        notify.wait_for("READY=1", gave_up=lambda: None if proc.poll() is None
                        else f"exit status {proc.returncode}")
        time.sleep(2)  # the start-up lines, then four stats lines into the closed pipe
        assert proc.poll() is None, "the daemon died of a closed stdout"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert proc.stderr is not None
        stderr = proc.stderr.read().decode()
    finally:
        notify.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert stderr.count("the log output is closed (Broken pipe)") == 1, stderr
    assert "Logging error" not in stderr and "Traceback" not in stderr, stderr


def catches(pid: int, signum: int, timeout: float = 20) -> None:
    """Wait until process `pid` has a handler for `signum` (SigCgt in /proc)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = Path(f"/proc/{pid}/status").read_text()
        caught = int(next(line for line in status.splitlines()
                          if line.startswith("SigCgt:")).split()[1], 16)
        if caught & (1 << (signum - 1)):
            return
        time.sleep(0.002)
    raise AssertionError(f"process {pid} never caught signal {signum}")


@pytest.mark.system
def test_sigterm_first_thing_is_a_clean_stop(tmp_path, cache_dir, photo_video, start_daemon):
    path = write_config(tmp_path / "c.yaml", looping(cache_dir, photo_video))
    daemon = start_daemon("--config", str(path))
    catches(daemon.proc.pid, signal.SIGTERM)
    daemon.signal(signal.SIGTERM)  # while the CLI is still importing
    assert daemon.finish(timeout=60) == 0, daemon.stderr
    assert [e["message"] for e in daemon.events] == [
        "stopping: signal received before start-up", "stopped"]


@pytest.mark.system
def test_sighup_first_thing_and_sigusr_are_not_fatal(tmp_path, cache_dir, classifier,
                                                     photo_video, start_daemon):
    path = write_config(tmp_path / "c.yaml", looping(cache_dir, photo_video))
    daemon = start_daemon("--config", str(path))
    catches(daemon.proc.pid, signal.SIGHUP)
    daemon.signal(signal.SIGHUP)  # while the CLI is still importing: a reload once running
    daemon.wait_for(is_ready)
    applied = daemon.wait_for(lambda e: e["event"] == "reload")
    assert applied["message"] == "reload: configuration applied (nothing changed)"
    for signum in (signal.SIGUSR1, signal.SIGUSR2):
        daemon.signal(signum)
        ignored = daemon.wait_for(lambda e: e["event"] == "lifecycle" and "ignored" in
                                  e["message"])
        assert ignored["message"] == (f"{signum.name} ignored: pi-infer reloads on SIGHUP and "
                                      f"stops on SIGTERM")
    daemon.wait_for(lambda e: e["event"] == "stats" and e["processed"] > 0)
    stop(daemon)
