"""A network camera on loopback: an HTTP MJPEG stream (what IP cameras serve) made of real
JPEG-encoded photos, which tests can stall, unplug and plug back in."""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2

from .conftest import IMAGES


class MjpegCamera:
    def __init__(self, photo: str = "coffee.png", fps: float = 10.0) -> None:
        image = cv2.resize(cv2.imread(str(IMAGES / photo)), (640, 480))
        self.jpeg = cv2.imencode(".jpg", image)[1].tobytes()
        self.interval = 1.0 / fps
        self.streaming = threading.Event()  # cleared: connections stay open, no frames (stall)
        self.streaming.set()
        with socket.socket() as probe:  # a free port that stays the same across restarts
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/stream.mjpg"
        self._server: ThreadingHTTPServer | None = None

    def plug_in(self) -> None:
        camera = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                try:
                    while camera._server is not None:
                        if camera.streaming.wait(0.1):
                            self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n"
                                             b"Content-Length: %d\r\n\r\n" % len(camera.jpeg)
                                             + camera.jpeg + b"\r\n")
                            time.sleep(camera.interval)
                except OSError:
                    pass

            def log_message(self, *args: object) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def unplug(self) -> None:
        """Close the listening socket and every open stream."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
