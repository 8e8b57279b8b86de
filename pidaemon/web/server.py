"""One bounded HTTP/1.1 server for every endpoint the daemon serves, on one thread.

A thread per connection let a thousand idle sockets take every descriptor and stall capture.
Here one thread multiplexes non-blocking sockets with `selectors`, and every resource a client
can hold is bounded: connections, time to send a request (a byte every few seconds does not
keep a socket), idle keep-alive time, time to take a response, request size, and open streams.
At the connection cap the one that has waited longest for its request is closed to make room,
so a flood of idle sockets only churns while a client that sends its request at once is
served; when every connection is busy the newcomer gets a short 503 at once. The cap stays at
a quarter of the descriptor limit so capture and model files can always be opened.

Handlers run on the server thread and must be quick (build a reply from values already at
hand); anything slow belongs to another thread that pushes into a `Stream`.
"""

from __future__ import annotations

import errno
import logging
import resource
import selectors
import socket
import threading
import time
from collections.abc import Callable

from pidaemon.web.http import (
    HttpError,
    Request,
    Response,
    Stream,
    error_response,
    parse_request,
    render,
    render_stream_head,
)
from pidaemon.web.throttle import Throttled

Handler = Callable[[Request], "Response | Stream"]
Guard = Callable[[Request], "Response | None"]

BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n"
        b"Retry-After: 1\r\nConnection: close\r\n\r\nbusy\n")
# Accept failing for want of descriptors or memory: pause accepting instead of spinning.
RESOURCE_ERRORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
PEER_GONE = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError, TimeoutError)
TICK = 0.25  # how often deadlines are checked
ACCEPT_PAUSE = 1.0


def descriptor_cap(wanted: int) -> int:
    """At most a quarter of the soft descriptor limit, so the rest of the daemon never starves."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return max(1, min(wanted, soft // 4)) if soft != resource.RLIM_INFINITY else wanted


class _Conn:
    """One client: bytes read so far, bytes left to write, its deadline and its stream."""

    def __init__(self, sock: socket.socket, client: tuple[str, int], now: float,
                 deadline: float) -> None:
        self.sock = sock
        self.client = client
        self.inbuf = bytearray()
        self.out = memoryview(b"")
        self.waiting_since = now  # when it began owing us a request
        self.deadline = deadline
        self.close_after_write = False
        self.idle = False  # kept alive after a response, no byte of the next request yet
        self.stream: Stream | None = None
        self.events = selectors.EVENT_READ


class HttpServer:
    """Routes by exact path; GET and HEAD only. `start()` binds, `stop()` closes everything."""

    def __init__(self, address: tuple[str, int], *, max_connections: int = 64,
                 max_streams: int = 4, header_timeout: float = 10.0, idle_timeout: float = 5.0,
                 write_timeout: float = 10.0, max_head_bytes: int = 8192,
                 max_body_bytes: int = 1024, evict_after: float = 0.0,
                 guard: Guard | None = None, name: str = "http") -> None:
        self.requested = address
        self.max_connections = descriptor_cap(max_connections)
        self.max_streams = max_streams
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self.write_timeout = write_timeout
        self.max_head_bytes = max_head_bytes
        self.max_body_bytes = max_body_bytes
        self.evict_after = evict_after
        self.guard = guard
        self.name = name
        self.routes: dict[str, Handler] = {}
        self.address: tuple[str, int] | None = None
        self._log = Throttled()
        self._conns: dict[int, _Conn] = {}
        self._streams: set[_Conn] = set()
        self._selector: selectors.BaseSelector | None = None
        self._listener: socket.socket | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._paused_until = 0.0
        self._stopping = False
        self._thread: threading.Thread | None = None

    def route(self, path: str, handler: Handler) -> None:
        self.routes[path] = handler

    @property
    def port(self) -> int:
        assert self.address is not None, "start() first"
        return self.address[1]

    @property
    def url(self) -> str:
        assert self.address is not None, "start() first"
        host, port = self.address
        return f"http://{f'[{host}]' if ':' in host else host}:{port}"

    @property
    def stream_count(self) -> int:
        return len(self._streams)

    def start(self) -> None:
        """Bind and serve on a daemon thread; OSError (e.g. address in use) if it cannot bind."""
        host = self.requested[0]
        listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(self.requested)
            listener.listen(128)
            listener.setblocking(False)
        except OSError:
            listener.close()
            raise
        self._listener = listener
        self._wake_r, self._wake_w = socket.socketpair()  # how other threads interrupt select()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.address = listener.getsockname()[:2]
        self._selector = selectors.DefaultSelector()
        self._selector.register(listener, selectors.EVENT_READ, "listen")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._thread = threading.Thread(target=self._serve, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        """Close every socket; returns within `timeout` even if a handler is stuck."""
        if self._thread is None:
            return
        self._stopping = True
        self._wake()
        self._thread.join(timeout)

    def _wake(self) -> None:
        try:
            assert self._wake_w is not None
            self._wake_w.send(b"x")
        except OSError:  # full (a wake-up is pending anyway) or closed by stop()
            pass

    def _serve(self) -> None:
        assert self._selector is not None
        next_tick = 0.0
        try:
            while not self._stopping:
                for key, mask in self._selector.select(TICK):
                    if key.data == "listen":
                        self._accept()
                    elif key.data == "wake":
                        self._drain_wake()
                    elif self._alive(key.data):  # not closed earlier in this batch
                        self._on_event(key.data, mask)
                self._feed_streams()
                now = time.monotonic()
                if now >= next_tick:
                    next_tick = now + TICK
                    self._expire(now)
        except Exception as exc:  # noqa: BLE001 - a bug here must be seen, and still clean up
            self._log("crash", f"server stopped by {exc!r}", logging.ERROR, exc)
        finally:
            self._close_all()

    def _drain_wake(self) -> None:
        assert self._wake_r is not None
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass

    def _close_all(self) -> None:
        for conn in list(self._conns.values()):
            self._close(conn)
        assert self._selector is not None and self._listener is not None
        assert self._wake_r is not None and self._wake_w is not None
        self._selector.close()
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.close()

    # Connections come and go.

    def _accept(self) -> None:
        assert self._listener is not None and self._selector is not None
        # A batch small enough that a newcomer is read before the cap's worth of later ones
        # could push it out.
        for _ in range(max(1, min(64, self.max_connections // 4))):
            try:
                sock, client = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in RESOURCE_ERRORS:
                    self._log("descriptors", f"cannot accept: {exc.strerror}; pausing "
                              f"{ACCEPT_PAUSE:g} s with {len(self._conns)} connections open",
                              logging.ERROR)
                    self._selector.unregister(self._listener)
                    self._paused_until = time.monotonic() + ACCEPT_PAUSE
                    return
                if exc.errno != errno.ECONNABORTED:
                    self._log("accept", f"cannot accept: {exc.strerror or exc}")
                continue
            now = time.monotonic()
            if len(self._conns) >= self.max_connections and not self._evict(now):
                self._refuse(sock)
                continue
            sock.setblocking(False)
            conn = _Conn(sock, client[:2], now, now + self.header_timeout)
            self._conns[sock.fileno()] = conn
            self._selector.register(sock, conn.events, conn)

    def _evict(self, now: float) -> bool:
        """Close the connection that has owed a request longest, if it waited `evict_after`."""
        waiting = (c for c in self._conns.values() if c.stream is None and not c.out)
        oldest = min(waiting, key=lambda c: c.waiting_since, default=None)
        if oldest is None or now - oldest.waiting_since < self.evict_after:
            return False
        self._close(oldest)
        return True

    def _refuse(self, sock: socket.socket) -> None:
        self._log("full", f"{len(self._conns)} connections open, the most allowed; "
                  "refusing new ones")
        try:
            sock.setblocking(False)
            sock.recv(65536)  # unread bytes would turn the close into a reset that hides the 503
        except OSError:
            pass
        try:
            sock.send(BUSY)
        except OSError:
            pass
        sock.close()

    def _alive(self, conn: _Conn) -> bool:
        return self._conns.get(conn.sock.fileno()) is conn

    def _close(self, conn: _Conn) -> None:
        assert self._selector is not None
        if not self._alive(conn):
            return
        del self._conns[conn.sock.fileno()]
        self._selector.unregister(conn.sock)
        conn.sock.close()
        if conn.stream is not None:
            self._streams.discard(conn)
            conn.stream.detach()

    def _expire(self, now: float) -> None:
        if self._paused_until and now >= self._paused_until:
            assert self._selector is not None and self._listener is not None
            self._paused_until = 0.0
            self._selector.register(self._listener, selectors.EVENT_READ, "listen")
        for conn in [c for c in self._conns.values() if c.deadline <= now]:
            if conn.out:
                self._log("slow-reader", f"closed {conn.client[0]}: it took no data for "
                          f"{self.write_timeout:g} s", logging.INFO)
            elif conn.inbuf:
                self._log("slow-request", f"closed {conn.client[0]}: no complete request "
                          f"within {self.header_timeout:g} s", logging.INFO)
            self._close(conn)

    def _set_events(self, conn: _Conn, events: int) -> None:
        if events != conn.events:
            assert self._selector is not None
            conn.events = events
            self._selector.modify(conn.sock, events, conn)

    # Reading and writing.

    def _on_event(self, conn: _Conn, mask: int) -> None:
        try:
            if mask & selectors.EVENT_READ:
                self._on_read(conn)
            if mask & selectors.EVENT_WRITE and self._alive(conn):
                self._on_write(conn)
        except PEER_GONE:
            self._close(conn)
        except OSError as exc:
            self._log("socket", f"connection from {conn.client[0]} failed: "
                      f"{exc.strerror or exc}")
            self._close(conn)

    def _on_read(self, conn: _Conn) -> None:
        if conn.stream is not None:
            if not conn.sock.recv(4096):  # read only to notice a hang-up
                self._close(conn)
            return
        room = self.max_head_bytes + self.max_body_bytes + 4 - len(conn.inbuf)
        data = conn.sock.recv(max(room, 1))
        if not data:
            self._close(conn)
            return
        if conn.idle:  # the next request begins: it gets the whole header time
            conn.idle = False
            conn.deadline = time.monotonic() + self.header_timeout
        conn.inbuf += data
        self._next_request(conn)

    def _next_request(self, conn: _Conn) -> None:
        try:
            parsed = parse_request(conn.inbuf, conn.client, self.max_head_bytes,
                                   self.max_body_bytes)
        except HttpError as error:
            conn.close_after_write = True
            self._send(conn, render(error_response(error.status), False, False))
            return
        if parsed is None:
            return
        request, used = parsed
        del conn.inbuf[:used]
        reply = self._dispatch(request)
        head_only = request.method == "HEAD"
        if isinstance(reply, Stream):
            self._start_stream(conn, reply, head_only)
            return
        conn.close_after_write = not request.keep_alive
        self._send(conn, render(reply, head_only, request.keep_alive))

    def _dispatch(self, request: Request) -> Response | Stream:
        try:
            denied = self.guard(request) if self.guard is not None else None
            if denied is not None:
                return denied
            handler = self.routes.get(request.path)
            return handler(request) if handler is not None else self._not_found()
        except Exception as exc:  # noqa: BLE001 - a handler's bug is a 500, not a dead server
            self._log("handler", f"{request.path} failed: {exc!r}", logging.ERROR, exc)
            return error_response(500)

    def _not_found(self) -> Response:
        paths = list(self.routes)
        names = " or ".join(filter(None, [", ".join(paths[:-1]), *paths[-1:]]))
        hint = f"; try {names}" if names else ""
        return Response(404, f"not found{hint}\n".encode())

    def _start_stream(self, conn: _Conn, stream: Stream, head_only: bool) -> None:
        if len(self._streams) >= self.max_streams:
            stream.detach()
            self._log("streams", f"{len(self._streams)} streams open, the most allowed; "
                      "refusing another", logging.INFO)
            conn.close_after_write = True
            self._send(conn, render(error_response(503), head_only, False))
            return
        conn.close_after_write = True
        conn.stream = stream
        self._streams.add(conn)
        stream.attach(self._wake)
        self._send(conn, render_stream_head(stream))
        if head_only:
            stream.detach()

    def _send(self, conn: _Conn, data: bytes) -> None:
        conn.out = memoryview(data)
        conn.deadline = time.monotonic() + self.write_timeout
        self._on_write(conn)

    def _on_write(self, conn: _Conn) -> None:
        sent = conn.sock.send(conn.out)
        conn.out = conn.out[sent:]
        if conn.out:  # a stream still listens for a hang-up; others leave requests unread
            self._set_events(conn, selectors.EVENT_WRITE if conn.stream is None
                             else selectors.EVENT_READ | selectors.EVENT_WRITE)
            return
        if conn.stream is not None:
            conn.deadline = float("inf")  # waiting for the pusher is not the client's fault
            self._set_events(conn, selectors.EVENT_READ)
            self._feed(conn)
        elif conn.close_after_write:
            self._close(conn)
        else:
            now = time.monotonic()
            conn.waiting_since = now
            conn.idle = not conn.inbuf
            conn.deadline = now + (self.idle_timeout if conn.idle else self.header_timeout)
            self._set_events(conn, selectors.EVENT_READ)
            if conn.inbuf:
                self._next_request(conn)  # pipelined

    def _feed_streams(self) -> None:
        for conn in list(self._streams):
            if not conn.out and self._alive(conn):
                try:
                    self._feed(conn)
                except PEER_GONE:
                    self._close(conn)

    def _feed(self, conn: _Conn) -> None:
        """Start writing the stream's newest chunk, or close once it has ended."""
        assert conn.stream is not None
        chunk = conn.stream.take()
        if chunk:
            self._send(conn, chunk)
        elif conn.stream.closed:
            self._close(conn)
