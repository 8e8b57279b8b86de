"""HTTP/1.1 messages for the daemon's server: parse a request, render a response, and the
`Stream` another thread feeds (MJPEG, server-sent events).

Only what a scraper, a browser and a health check need: GET and HEAD, no request bodies worth
reading, no chunked encoding. Anything else is refused with a status, never an exception.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus

METHODS = ("GET", "HEAD")


class HttpError(Exception):
    """A request answered with `status` and then the connection is closed."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # names lower-cased; repeated headers joined with ", "
    client: tuple[str, int]
    keep_alive: bool


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain"
    headers: dict[str, str] = field(default_factory=dict)


class Stream:
    """A response that stays open while another thread pushes chunks into it.

    The server writes chunks without blocking; when the client is slower than the pusher, a new
    chunk replaces the one not yet started (a chunk being written is finished first), so a slow
    client gets fewer chunks and memory stays at two chunks at most. `closed` turns true when
    the client goes away or the server stops; the pusher should then drop the stream.
    """

    def __init__(self, content_type: str, headers: dict[str, str] | None = None,
                 status: int = 200) -> None:
        self.status = status
        self.content_type = content_type
        self.headers = headers or {}
        self._lock = threading.Lock()
        self._chunk: bytes | None = None
        self._closed = False
        self._wake: Callable[[], None] = lambda: None

    @property
    def closed(self) -> bool:
        return self._closed

    def push(self, chunk: bytes) -> bool:
        """Queue `chunk` in place of any unsent one; False once the stream has ended."""
        with self._lock:
            if self._closed:
                return False
            self._chunk = chunk
        self._wake()
        return True

    def close(self) -> None:
        """End the stream from the pushing side; a chunk already pushed is still sent."""
        with self._lock:
            self._closed = True
        self._wake()

    def take(self) -> bytes | None:
        """The chunk to write next, if any (server side)."""
        with self._lock:
            chunk, self._chunk = self._chunk, None
        return chunk

    def attach(self, wake: Callable[[], None]) -> None:
        """Called by the server: how a push wakes its loop."""
        self._wake = wake

    def detach(self) -> None:
        """Called by the server when the connection ends."""
        with self._lock:
            self._closed = True
            self._chunk = None
        self._wake = lambda: None


def _status_line(status: int) -> str:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    return f"HTTP/1.1 {status} {reason}\r\n"


def _header_lines(headers: dict[str, str]) -> str:
    lines = []
    for name, value in headers.items():
        if any(c in name + value for c in "\r\n\0") or not name:
            raise ValueError(f"header {name!r} contains a line break")
        lines.append(f"{name}: {value}\r\n")
    return "".join(lines)


def render(response: Response, head_only: bool, keep_alive: bool) -> bytes:
    """The bytes of `response`; a HEAD request gets the headers only."""
    headers = {"Content-Type": response.content_type,
               "Content-Length": str(len(response.body)), **response.headers}
    if not keep_alive:
        headers["Connection"] = "close"
    head = (_status_line(response.status) + _header_lines(headers) + "\r\n").encode("latin-1")
    return head if head_only else head + response.body


def render_stream_head(stream: Stream) -> bytes:
    """A stream's headers: no length, so the body runs until the connection closes."""
    headers = {"Content-Type": stream.content_type, "Cache-Control": "no-store",
               **stream.headers, "Connection": "close"}
    return (_status_line(stream.status) + _header_lines(headers) + "\r\n").encode("latin-1")


def error_response(status: int) -> Response:
    return Response(status, f"{HTTPStatus(status).phrase.lower()}\n".encode(),
                    headers={"Allow": ", ".join(METHODS)} if status == 405 else {})


def parse_request(buffer: bytearray, client: tuple[str, int], max_head: int,
                  max_body: int) -> tuple[Request, int] | None:
    """The first complete request in `buffer` and the bytes it used; None while incomplete.

    Raises HttpError for anything to refuse: a head over `max_head` bytes (431), a method other
    than GET or HEAD (405), a body over `max_body` (413), a malformed line (400).
    """
    start = 0
    while buffer.startswith(b"\r\n", start):  # stray line breaks before a request are allowed
        start += 2
    end = buffer.find(b"\r\n\r\n", start)
    if end < 0:
        if len(buffer) > max_head:
            raise HttpError(431, "request line and headers too large")
        return None
    if end - start > max_head:
        raise HttpError(431, "request line and headers too large")
    lines = bytes(buffer[start:end]).decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[2] not in ("HTTP/1.0", "HTTP/1.1"):
        raise HttpError(400, "malformed request line")
    method, target, version = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip() or " " in name:
            raise HttpError(400, "malformed header")
        key = name.lower()
        value = value.strip(" \t")
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    if method not in METHODS:
        raise HttpError(405, "method not allowed")
    if "transfer-encoding" in headers:
        raise HttpError(400, "request bodies are not accepted")
    length_text = headers.get("content-length", "0")
    if not length_text.isdigit():
        raise HttpError(400, "malformed Content-Length")
    length = int(length_text)
    if length > max_body:
        raise HttpError(413, "request body too large")
    used = end + 4 + length
    if len(buffer) < used:
        return None
    if target.startswith(("http://", "https://")):  # absolute form, as proxies send it
        target = "/" + target.split("/", 3)[3] if target.count("/") >= 3 else "/"
    if not target.startswith("/"):
        raise HttpError(400, "malformed request target")
    path, _, query = target.partition("#")[0].partition("?")
    tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    keep_alive = "close" not in tokens if version == "HTTP/1.1" else "keep-alive" in tokens
    return Request(method, path, query, headers, client, keep_alive), used
