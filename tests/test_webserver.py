"""The daemon's bounded HTTP server, through real sockets on loopback; and the daemon itself
keeping /healthz and its pipeline alive under a flood of idle connections at `ulimit -n 1024`.

The server runs in this process with short timeouts of its own; the tests wait on what the
server did (its open connections: `_conns`) rather than for fixed times. Out of descriptors and
the flood need a process of their own (a descriptor limit): they are marked system.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import resource
import select
import signal
import socket
import struct
import subprocess
import sys
import time
import tracemalloc
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from pidaemon.web.http import Request, Response, Stream
from pidaemon.web.server import HttpServer

from .conftest import REPO, base_config, write_config
from .fakes import wait_until

HEAD = b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"


@contextlib.contextmanager
def serving(**limits) -> Iterator[HttpServer]:
    server = HttpServer(("127.0.0.1", 0), **limits)
    server.route("/hello", lambda request: Response(200, b"hello\n"))
    server.route("/echo", lambda request: Response(
        200, f"{request.method} {request.path} {request.query} {request.headers['host']}"
        .encode()))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def connect(server: HttpServer, timeout: float = 5) -> socket.socket:
    return socket.create_connection(server.address, timeout=timeout)


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response with a Content-Length body: status, headers, body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    while len(body) < int(headers.get("Content-Length", 0)):
        body += sock.recv(65536)
    return int(lines[0].split(" ")[1]), headers, body


def ask(server: HttpServer, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    with connect(server) as sock:
        sock.sendall(raw)
        return read_response(sock)


def closed_by_peer(sock: socket.socket, within: float) -> bool:
    """True when the server closes (EOF or reset) within `within` seconds."""
    sock.settimeout(within)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_routes_statuses_and_head():
    with serving() as server:
        assert ask(server, HEAD)[::2] == (200, b"hello\n")
        echo = ask(server, b"GET /echo?a=1 HTTP/1.1\r\nHost: box\r\n\r\n")
        assert echo[2] == b"GET /echo a=1 box"
        status, headers, body = ask(server, b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (status, body) == (404, b"not found; try /hello or /echo\n")
        status, headers, body = ask(server, b"POST /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (status, headers["Allow"], headers["Connection"]) == (405, "GET, HEAD", "close")
        big = b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n"
        assert ask(server, big)[0] == 431
        assert ask(server, b"GET /hello\r\n\r\n")[0] == 400
        assert ask(server, b"GET /hello HTTP/1.1\r\nContent-Length: 5000\r\n\r\n")[0] == 413
        with connect(server) as sock:  # HEAD, then GET: the GET's answer follows the HEAD's head
            sock.sendall(b"HEAD /hello HTTP/1.1\r\nHost: x\r\n\r\n" + HEAD)
            data = b""
            while not data.endswith(b"hello\n"):
                data += sock.recv(65536)
        reply, _, following = data.partition(b"\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 200 OK") and b"Content-Length: 6" in reply
        assert following.startswith(b"HTTP/1.1 200 OK"), "the HEAD's answer had a body"


def test_keep_alive_pipelining_and_close():
    with serving() as server, connect(server) as sock:
        sock.sendall(HEAD * 3)
        data = b""
        while data.count(b"hello\n") < 3:
            data += sock.recv(65536)
        assert data.count(b"HTTP/1.1 200 OK\r\n") == 3
        sock.sendall(HEAD)
        assert read_response(sock)[0] == 200
        sock.sendall(b"GET /hello HTTP/1.1\r\nConnection: close\r\n\r\n")
        assert read_response(sock)[1]["Connection"] == "close"
        assert closed_by_peer(sock, 2)
    with serving() as server, connect(server) as sock:
        sock.sendall(b"GET /hello HTTP/1.0\r\n\r\n")
        assert read_response(sock)[0] == 200
        assert closed_by_peer(sock, 2)


def test_a_slowloris_is_closed_at_the_header_timeout():
    with serving(header_timeout=0.5) as server, connect(server) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /hello HTTP/1.1\r\n")
        closed = False
        for byte in b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa":  # a byte every 0.1 s, up to 4 s
            time.sleep(0.1)
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            if closed_by_peer(sock, 0.01):
                closed = True
                break
        assert closed
        assert 0.45 <= time.monotonic() - started < 2.5


def test_an_idle_keep_alive_connection_is_closed():
    with serving(idle_timeout=0.5) as server, connect(server) as sock:
        sock.sendall(HEAD)
        assert read_response(sock)[0] == 200
        assert closed_by_peer(sock, 3)


def test_past_the_connection_cap_a_newcomer_gets_503_at_once():
    with serving(max_connections=3, evict_after=60) as server:
        idle = [connect(server) for _ in range(3)]
        wait_until(lambda: len(server._conns) == 3, timeout=5)
        with connect(server, timeout=2) as extra:
            extra.sendall(HEAD)
            status, headers, body = read_response(extra)
        assert (status, body, headers["Connection"]) == (503, b"busy\n", "close")
        for sock in idle:
            sock.close()


def test_at_the_cap_the_longest_silent_connection_makes_room():
    with serving(max_connections=3) as server:
        idle = [connect(server) for _ in range(3)]
        wait_until(lambda: len(server._conns) == 3, timeout=5)  # accepted in order
        assert ask(server, HEAD)[0] == 200
        assert closed_by_peer(idle[0], 2)
        for sock in idle:
            sock.close()


def streaming_server(**limits) -> tuple[HttpServer, list[Stream]]:
    streams: list[Stream] = []

    def open_stream(request: Request) -> Stream:
        streams.append(Stream("application/octet-stream"))
        return streams[-1]

    server = HttpServer(("127.0.0.1", 0), **limits)
    server.route("/stream", open_stream)
    server.start()
    return server, streams


def read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096)
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


CHUNK = 64 * 1024


def chunk(number: int) -> bytes:
    return struct.pack(">I", number) + bytes(CHUNK - 4)


def server_and_chunks(snapshot: tracemalloc.Snapshot) -> tracemalloc.Snapshot:
    """What the server allocated and the chunks this module made: not what other threads of
    the test process (an earlier test's leftovers, pytest's own) allocate meanwhile."""
    return snapshot.filter_traces([tracemalloc.Filter(True, "*/pidaemon/web/*"),
                                   tracemalloc.Filter(True, __file__)])


def test_a_slow_reader_gets_the_newest_chunk_and_memory_stays_flat():
    server, streams = streaming_server(write_timeout=60)
    try:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
            sock.connect(server.address)
            sock.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
            head, rest = read_head(sock)
            assert head.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" in head
            tracemalloc.start()
            before = server_and_chunks(tracemalloc.take_snapshot())
            pushed = 2000  # 125 MiB to a client that reads nothing
            for number in range(pushed):
                assert streams[0].push(chunk(number))
            after = server_and_chunks(tracemalloc.take_snapshot())
            tracemalloc.stop()
            grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
            # The newest chunk, the one being written, the loop's last: a few, never 2000.
            assert grown < 6 * CHUNK, f"{grown} bytes held for {pushed} unsent chunks"
            sock.settimeout(10)
            data = rest

            def last_number() -> int | None:
                whole = len(data) - len(data) % CHUNK
                return struct.unpack(">I", data[whole - CHUNK:whole - CHUNK + 4])[0] if whole \
                    else None

            while last_number() != pushed - 1:  # the newest chunk arrives, whole
                more = sock.recv(1 << 20)
                assert more, "closed before the newest chunk"
                data += more
            sock.settimeout(0.2)
            with contextlib.suppress(TimeoutError):  # and nothing after it
                data += sock.recv(1 << 20)
            assert len(data) % CHUNK == 0, "a chunk was cut"
            numbers = [struct.unpack(">I", data[i:i + 4])[0] for i in range(0, len(data), CHUNK)]
            assert numbers == sorted(numbers) and numbers[-1] == pushed - 1
            assert len(numbers) < pushed / 4, "old chunks were queued, not replaced"
    finally:
        server.stop()


def test_a_client_leaving_ends_its_stream_and_the_cap_holds():
    server, streams = streaming_server(max_streams=1)
    try:
        with connect(server) as sock:
            sock.sendall(b"GET /stream HTTP/1.1\r\n\r\n")
            read_head(sock)
            assert streams[0].push(b"frame") and not streams[0].closed
            with connect(server) as second:
                second.sendall(b"GET /stream HTTP/1.1\r\n\r\n")
                assert read_response(second)[0] == 503
            assert streams[1].closed
            assert server.stream_count == 1
        wait_until(lambda: streams[0].closed, timeout=3)
        assert not streams[0].push(b"frame")
        assert server.stream_count == 0
    finally:
        server.stop()


def test_stop_closes_every_socket_quickly():
    baseline = open_fds()
    server, streams = streaming_server()
    clients = [socket.create_connection(server.address, timeout=5) for _ in range(5)]
    clients[0].sendall(b"GET /stream HTTP/1.1\r\n\r\n")
    read_head(clients[0])
    clients[1].sendall(b"GET /stream HTTP/1.1\r\n")  # half a request
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 1.5
    assert all(closed_by_peer(sock, 2) for sock in clients)
    assert streams[0].closed
    for sock in clients:
        sock.close()
    assert open_fds() == baseline


def test_a_guard_can_refuse_with_401():
    def guard(request: Request) -> Response | None:
        if request.headers.get("authorization") == "Bearer right":
            return None
        return Response(401, b"credential needed\n",
                        headers={"WWW-Authenticate": 'Bearer realm="pi-infer"'})

    with serving(guard=guard) as server:
        status, headers, body = ask(server, HEAD)
        assert (status, body) == (401, b"credential needed\n")
        assert headers["WWW-Authenticate"] == 'Bearer realm="pi-infer"'
        ask_right = b"GET /hello HTTP/1.1\r\nAuthorization: Bearer right\r\n\r\n"
        assert ask(server, ask_right)[0] == 200


def test_resets_log_no_traceback_and_the_server_carries_on(caplog):
    logger = logging.getLogger("pi-infer")  # its records, whether or not they propagate
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.DEBUG, logger="pi-infer")
    try:
        with serving() as server:
            server.route("/big", lambda request: Response(200, bytes(8 << 20)))
            for raw in (b"GET /big HTTP/1.1\r\n\r\n", b"GET /hel", b""):
                sock = connect(server)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.sendall(raw)
                if raw.startswith(b"GET /big"):
                    assert sock.recv(1)  # in the middle of the response
                else:  # the server holds what was sent
                    wait_until(lambda raw=raw: [bytes(c.inbuf) for c in
                                                list(server._conns.values())] == [raw], timeout=5)
                sock.close()  # a reset, not a FIN
                wait_until(lambda: not server._conns, timeout=5)  # the server let it go
            assert ask(server, HEAD)[0] == 200
    finally:
        logger.removeHandler(caplog.handler)
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


def test_ipv6_literal_port_zero_and_a_port_in_use():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError, match="in use"):
            HttpServer(taken.getsockname()).start()
    if not socket.has_ipv6:
        return
    server = HttpServer(("::1", 0))
    try:
        server.start()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    try:
        assert server.url.startswith("http://[::1]:") and server.port > 0
        with socket.create_connection(server.address, timeout=5) as sock:
            sock.sendall(HEAD)
            assert read_response(sock)[2] == b"not found\n"
    finally:
        server.stop()


OUT_OF_DESCRIPTORS = """
import logging, resource, sys
from pidaemon.web.http import Response
from pidaemon.web.server import HttpServer
logging.basicConfig(stream=sys.stderr, format="%(message)s")
resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
server = HttpServer(("127.0.0.1", 0))
server.route("/hello", lambda request: Response(200, b"hello\\n"))
server.start()
hog = []
try:
    while True:
        hog.append(open("/dev/null"))
except OSError:
    pass
print(server.port, flush=True)
sys.stdin.readline()
for file in hog:
    file.close()
sys.stdin.readline()
server.stop()
"""


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.system
def test_out_of_descriptors_the_server_pauses_instead_of_spinning():
    child = subprocess.Popen([sys.executable, "-c", OUT_OF_DESCRIPTORS], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert child.stdout is not None and child.stdin is not None
        port = int(child.stdout.readline())
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(HEAD)  # waits in the backlog: accept() fails with EMFILE
            time.sleep(0.5)
            cpu = cpu_seconds(child.pid)
            time.sleep(2)
            assert cpu_seconds(child.pid) - cpu < 0.5, "the accept loop spins"
            child.stdin.write("free\n")
            child.stdin.flush()
            assert read_response(sock)[2] == b"hello\n"
        child.stdin.write("stop\n")
        child.stdin.close()
        assert child.wait(10) == 0
        assert child.stderr is not None
        log = child.stderr.read()
        assert log.count("cannot accept: Too many open files") == 1, log
        assert "Traceback" not in log
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


# The flood: a daemon at `ulimit -n 1024` against 1,100 idle connections.

FLOOD = 1100
FLOOD_SECONDS = 20
PREFIX = b"GET /metrics HTTP/1.1\r\nHost: x\r\n"


@contextlib.contextmanager
def soft_nofile(limit: int) -> Iterator[None]:
    """This process's soft descriptor limit for the block; children started in it inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def healthz(url: str) -> int:
    """The status of GET /healthz from a fresh connection; 0 if none came in 5 s."""
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


class Flood:
    """Idle clients: each connects without blocking, starts a request, then adds one header
    byte per round; one the server closed connects again in the next round."""

    def __init__(self, address: tuple[str, int], size: int) -> None:
        self.address = address
        self.slots: list[socket.socket | None] = [None] * size
        self.connecting: set[int] = set()
        self.connects = 0

    def round(self) -> None:
        poller = select.poll()
        for index in self.connecting:
            poller.register(self.slots[index], select.POLLOUT)
        connected = {fd for fd, _ in poller.poll(0)}
        for index, sock in enumerate(self.slots):
            if index in self.connecting and sock is not None and sock.fileno() not in connected:
                self.drop(index)  # a fresh SYN now rather than the kernel's slow retries
                sock = None
            try:
                if sock is None:
                    sock = self.slots[index] = socket.socket()
                    sock.setblocking(False)
                    self.connecting.add(index)
                    self.connects += 1
                    if sock.connect_ex(self.address) not in (0, errno.EINPROGRESS):
                        raise OSError
                elif index in self.connecting:
                    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                        raise OSError
                    self.connecting.discard(index)
                    sock.send(PREFIX)
                else:
                    sock.send(b"X")
            except OSError:
                self.drop(index)

    def drop(self, index: int) -> None:
        sock = self.slots[index]
        if sock is not None:
            sock.close()
        self.slots[index] = None
        self.connecting.discard(index)

    @property
    def established(self) -> int:
        return sum(s is not None for s in self.slots) - len(self.connecting)

    def close(self) -> None:
        for index in range(len(self.slots)):
            self.drop(index)


def daemon_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.system
def test_idle_flood_at_ulimit_1024_leaves_healthz_and_the_pipeline_alone(
        tmp_path, cache_dir, photo_video, start_daemon):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < FLOOD + 200:
        pytest.skip(f"the test itself needs {FLOOD + 200} descriptors; hard limit {hard}")
    config = base_config(cache_dir, camera={"loop": True},
                         metrics={"enabled": True, "listen": "127.0.0.1:0"})
    path = write_config(tmp_path / "c.yaml", config)
    with soft_nofile(1024):
        daemon = start_daemon("--config", str(path), "--source", str(photo_video))
    url = daemon.wait_for(lambda e: e["event"] == "metrics")["url"]
    daemon.wait_for(lambda e: e["event"] == "stats" and e["fps"] > 0)
    pid = daemon.proc.pid
    with open(f"/proc/{pid}/limits") as limits:
        assert any(line.startswith("Max open files") and " 1024 " in line for line in limits)
    baseline = daemon_fds(pid)
    flood = Flood(("127.0.0.1", int(url.rsplit(":", 1)[1])), FLOOD)
    answers = []
    most = 0
    with soft_nofile(min(hard, FLOOD + 1000)) if soft < FLOOD + 200 else contextlib.nullcontext():
        daemon.drain()
        flood_start = len(daemon.events)
        started = time.monotonic()
        try:
            while time.monotonic() - started < FLOOD_SECONDS:
                round_start = time.monotonic()
                flood.round()
                most = max(most, daemon_fds(pid))
                time.sleep(max(0.0, round_start + 1.3 - time.monotonic()))
                answers.append(healthz(url))  # from a fresh connection, mid-flood
                time.sleep(max(0.0, round_start + 2.0 - time.monotonic()))
            established = flood.established
        finally:
            flood.close()
        daemon.drain()
    during = daemon.events[flood_start:]
    stats = [e for e in during if e["event"] == "stats"]
    print(f"connects {flood.connects}, established at the end {established}, daemon fds "
          f"{baseline} before, {most} at most; /healthz {answers}; fps {[e['fps'] for e in stats]}")
    assert flood.connects >= FLOOD
    assert answers and set(answers) == {200}, answers
    assert len(stats) >= FLOOD_SECONDS / 0.5 / 2 and stats[-1]["fps"] > 0, stats[-3:]
    assert sum(e["fps"] > 0 for e in stats) >= 0.9 * len(stats)
    assert not [e for e in during if e["level"] == "error"]
    http = [e for e in during if e["event"] == "http"]
    assert len(http) <= 3 * (FLOOD_SECONDS / 60 + 1), http  # each kind at most once a minute
    assert most <= baseline + 64 + 4  # at most the default cap of 64 connections
    deadline = time.monotonic() + 10
    while daemon_fds(pid) > baseline + 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert daemon_fds(pid) <= baseline + 2
    assert healthz(url) == 200
    daemon.signal(signal.SIGTERM)
    assert daemon.finish() == 0

