"""The live page while the daemon plays a video of a shared photo: loaded in headless Chromium
from the daemon as a user runs it (a process of its own); its files, MJPEG stream (decoded with
OpenCV), snapshot and status, its password, its viewer cap and what it costs when nobody looks,
over HTTP from the daemon's real Service in-process."""

from __future__ import annotations

import base64
import json
import os
import socket
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from pidaemon.errors import EX_CONFIG

from .browser import Browser
from .cli_inprocess import run_cli
from .conftest import Daemon, base_config, write_config, write_video
from .fakes import wait_until
from .inprocess import ServiceRun
from .mqtt_broker import free_port

CAMERA_SIZE = (640, 480)  # write_video's default: the size the daemon's camera grants


@pytest.fixture(scope="module")
def coffee_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The espresso photo for 3 s: its class wins clearly on every CPU (tests/labels.py)."""
    return write_video(tmp_path_factory.mktemp("video") / "coffee.avi", ["coffee.png"], 3.0)


def get(url: str, headers: dict | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def live(url: str, headers: dict | None = None) -> dict:
    status, _, body = get(f"{url}/api/live", headers)
    assert status == 200, body
    return json.loads(body)


def live_config(tmp_path: Path, cache_dir: Path, **web) -> str:
    config = base_config(cache_dir, camera={"loop": True},
                         web={"enabled": True, "listen": "127.0.0.1:0", **web})
    return str(write_config(tmp_path / "c.yaml", config))


def ready(daemon: Daemon | ServiceRun) -> str:
    """Wait for READY and a processed frame; returns the page's URL (without the final /)."""
    url = daemon.wait_for(lambda e: e["event"] == "web")["url"]
    daemon.wait_for(lambda e: e["event"] == "lifecycle" and e["message"].startswith("ready"))
    daemon.wait_for(lambda e: e["event"] == "stats" and e["processed"] > 0)
    return url


def stream_parts(url: str, count: int, headers: dict | None = None) -> list[bytes]:
    """The first `count` JPEGs of /stream.mjpg, parsed from the multipart body."""
    request = urllib.request.Request(f"{url}/stream.mjpg", headers=headers or {})
    parts = []
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("multipart/x-mixed-replace")
        while len(parts) < count:
            line = response.readline()
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
                response.readline()  # the blank line before the image
                parts.append(response.read(length))
    return parts


def open_stream(port: int) -> socket.socket:
    """A viewer of /stream.mjpg on a raw socket, after its status line has arrived."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")
    return sock


def stats_go_by(daemon: Daemon | ServiceRun, count: int = 2) -> int:
    """Wait while frames flow for `count` more stats lines; returns the frames processed."""
    processed = 0
    for _ in range(count):
        processed = daemon.wait_for(lambda e: e["event"] == "stats")["processed"]
    return processed


def no_viewers(url: str) -> bool:
    return live(url)["viewers"] == 0


def status_line(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, data
        data += chunk
    return data.split(b"\r\n")[0]


def threads_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads: line")


@pytest.mark.system
def test_the_page_in_chromium_shows_the_label_the_graphs_and_the_frame(
        tmp_path, cache_dir, coffee_video, start_daemon):
    daemon = start_daemon("--config", live_config(tmp_path, cache_dir), "--source",
                          str(coffee_video))
    url = ready(daemon)
    browser = Browser()
    try:
        page = browser.page(url + "/")
        page.wait_for("document.querySelector('#topk li .label')?.textContent === 'espresso'")
        page.wait_for("(document.querySelector('#fps-graph polyline')?.getAttribute('points')"
                      " || '').split(' ').length >= 3")
        page.wait_for("document.querySelector('#latency-graph polyline.p50') !== null")
        width = page.wait_for("document.getElementById('frame').naturalWidth")
        height = page.evaluate("document.getElementById('frame').naturalHeight")
        assert (width, height) == CAMERA_SIZE
        assert page.evaluate("document.getElementById('state').textContent") == "streaming"
        assert page.evaluate("document.getElementById('engine').textContent") == next(
            e for e in daemon.events if e["event"] == "model")["engine"]
        # A few more graph points for the picture.
        page.wait_for("(document.querySelector('#fps-graph polyline')?.getAttribute('points')"
                      " || '').split(' ').length >= 6")
        shot = page.screenshot(tmp_path / "live-page.png")
        print(f"\nscreenshot of the live page: {shot}")
        assert cv2.imread(str(shot)) is not None
        assert live(url)["viewers"] == 1
    finally:
        browser.close()


def test_the_files_stream_snapshot_and_status_and_no_cost_unwatched(
        tmp_path, cache_dir, coffee_video, start_service):
    daemon = start_service("--config", live_config(tmp_path, cache_dir), "--source",
                           str(coffee_video))
    url = ready(daemon)
    stats_go_by(daemon)
    assert live(url)["encoded_frames"] == 0, "encoded a frame before anyone looked"

    # Small, served from here only, with the headers of a page that runs no foreign script.
    sizes = 0
    for path in ("/", "/app.js", "/app.css"):
        status, headers, body = get(url + path)
        assert status == 200, path
        assert "script-src 'self'" in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Referrer-Policy"] == "no-referrer"
        assert b"http://" not in body.replace(b"http://www.w3.org/2000/svg", b"")
        assert b"https://" not in body
        sizes += len(body)
    assert sizes <= 100_000

    # An image from the stream decodes, at the camera's size.
    grant = next(e for e in daemon.events if e["event"] == "camera" and e.get("width"))
    assert (grant["width"], grant["height"]) == CAMERA_SIZE
    image = cv2.imdecode(np.frombuffer(stream_parts(url, 2)[-1], np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape == (CAMERA_SIZE[1], CAMERA_SIZE[0], 3)
    status, headers, body = get(f"{url}/snapshot.jpg")
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    snapshot = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    assert snapshot.shape == image.shape

    # /api/status is the MQTT status payload.
    status, _, body = get(f"{url}/api/status")
    payload = json.loads(body)
    assert status == 200 and payload["label"] == "espresso"
    assert {"fps", "latency_p50_ms", "dropped", "processed", "failed_frames", "status",
            "time"} <= set(payload)

    # Nobody looks any more: no frame is encoded while frames go on being processed.
    wait_until(lambda: no_viewers(url), timeout=10)
    before = live(url)
    stats_go_by(daemon)
    after = live(url)
    assert before["viewers"] == after["viewers"] == 0
    assert after["encoded_frames"] == before["encoded_frames"] > 0
    assert after["status"]["processed"] > before["status"]["processed"]
    daemon.stop()
    assert daemon.finish() == 0


def test_beyond_loopback_the_page_needs_the_password(tmp_path, cache_dir, coffee_video,
                                                      start_service):
    secret = tmp_path / "web-password"
    secret.write_text("s3cret horse\n")
    path = live_config(tmp_path, cache_dir, listen="0.0.0.0:0", password_file=str(secret),
                       username="viewer")
    daemon = start_service("--config", path, "--source", str(coffee_video))
    url = ready(daemon).replace("0.0.0.0", "127.0.0.1")
    basic = {"Authorization": "Basic " + base64.b64encode(b"viewer:s3cret horse").decode()}
    wrong = {"Authorization": "Basic " + base64.b64encode(b"viewer:guess").decode()}
    for path in ("/", "/stream.mjpg", "/snapshot.jpg", "/api/status", "/api/live"):
        status, headers, body = get(url + path)
        assert status == 401, path
        assert headers["WWW-Authenticate"].startswith("Basic ")
        assert b"\xff\xd8" not in body  # never a frame
        assert get(url + path, wrong)[0] == 401
    assert get(url + "/", basic)[0] == 200
    assert get(url + "/api/status", {"Authorization": "Bearer s3cret horse"})[0] == 200
    image = stream_parts(url, 1, basic)[0]
    assert cv2.imdecode(np.frombuffer(image, np.uint8), cv2.IMREAD_COLOR) is not None
    refused = daemon.wait_for(lambda e: e["event"] == "http" and e.get("kind") == "auth")
    assert "credentials" in refused["message"]
    daemon.stop()
    assert daemon.finish() == 0


def test_config_errors_exit_78_naming_the_key(tmp_path, cache_dir, coffee_video, capsys):
    def check(web: dict, *command: str) -> str:
        config = base_config(cache_dir, web={"enabled": True, **web})
        path = write_config(tmp_path / "bad.yaml", config)
        args = ("run", "--config", str(path), "--source", str(coffee_video)) if command else (
            "check-config", str(path))
        result = run_cli(capsys, *args)
        assert result.returncode == EX_CONFIG, result.stdout + result.stderr
        return result.stdout + result.stderr

    assert "web.password_file: is required" in check({"listen": "0.0.0.0:8080"})
    assert "web.listen: must be ADDRESS:PORT" in check({"listen": "localhost"})
    empty = tmp_path / "empty"
    empty.write_text("")
    assert "web.password_file:" in check({"password_file": str(empty)})
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        output = check({"listen": f"127.0.0.1:{port}"}, "run")
    assert f"web.listen: cannot listen on 127.0.0.1:{port}: Address already in use" in output
    assert not [line for line in output.splitlines() if line.startswith("ready in")]


def test_viewer_cap_churn_and_one_server_with_metrics(tmp_path, cache_dir, coffee_video,
                                                      start_service):
    port = free_port()  # one address for both metrics.listen and web.listen
    listen = f"127.0.0.1:{port}"
    # Frames as often as a viewer may take them, so that each new viewer has its first soon.
    config = base_config(cache_dir, camera={"loop": True, "fps": 25},
                         web={"enabled": True, "listen": listen, "max_clients": 2,
                              "max_fps": 25},
                         metrics={"enabled": True, "listen": listen})
    daemon = start_service("--config", str(write_config(tmp_path / "c.yaml", config)),
                           "--source", str(coffee_video))
    url = ready(daemon)
    assert get(f"{url}/healthz")[0] == 200 and get(f"{url}/metrics")[0] == 200
    assert get(f"{url}/")[0] == 200

    viewers = [open_stream(port) for _ in range(2)]
    for sock in viewers:
        assert status_line(sock) == b"HTTP/1.1 200 OK"
    extra = open_stream(port)
    assert status_line(extra) == b"HTTP/1.1 503 Service Unavailable"
    extra.close()
    for sock in viewers:
        sock.close()

    wait_until(lambda: no_viewers(url), timeout=10)
    threads = threads_of(os.getpid())  # the daemon's threads are this process's
    for _ in range(50):  # each leaves in the middle of a frame
        sock = open_stream(port)
        data = b""
        while len(data) < 2000:
            chunk = sock.recv(1000)
            assert chunk
            data += chunk
        sock.close()
    wait_until(lambda: no_viewers(url), timeout=10)
    assert threads_of(os.getpid()) <= threads
    state = live(url)
    assert state["viewers"] == 0
    stats_go_by(daemon)
    assert live(url)["encoded_frames"] == state["encoded_frames"]
    # Still serving, and still within the cap once they have gone.
    sock = open_stream(port)
    assert status_line(sock) == b"HTTP/1.1 200 OK"
    sock.close()
    daemon.stop()
    assert daemon.finish() == 0
