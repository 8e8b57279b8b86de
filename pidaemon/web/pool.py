"""One HTTP server per distinct listen address, shared by the outputs that serve on it.

With metrics.listen and web.listen the same, /metrics, /healthz and the live page come from one
server and one port, as a user who wrote one address expects; different addresses get a server
each. A server stops when the last output using it lets go.
"""

from __future__ import annotations

from pidaemon.config import parse_listen
from pidaemon.errors import ConfigError
from pidaemon.web.server import HttpServer


class ServerPool:
    def __init__(self) -> None:
        self._servers: dict[tuple[str, int], tuple[HttpServer, int]] = {}

    def acquire(self, listen: str, key: str, max_streams: int = 0) -> HttpServer:
        """The started server for `listen`, binding it on first use.

        `key` names the setting in the error a failed bind raises (a ConfigError, exit 78);
        `max_streams` raises the server's stream cap to what this output needs.
        """
        address = parse_listen(listen)
        if address[1] != 0 and address in self._servers:
            server, users = self._servers[address]
        else:
            server, users = HttpServer(address, max_streams=max_streams, name="http"), 0
            try:
                server.start()
            except OSError as exc:
                raise ConfigError(f"{key}: cannot listen on {listen}: "
                                  f"{exc.strerror or exc}") from None
            # Port 0 picks a free port per output: keyed by the port granted.
            address = server.address or address
        server.max_streams = max(server.max_streams, max_streams) if users else max_streams
        self._servers[address] = (server, users + 1)
        return server

    def release(self, server: HttpServer) -> None:
        """One output fewer on `server`; the last one stops it."""
        for address, (known, users) in list(self._servers.items()):
            if known is server:
                if users > 1:
                    self._servers[address] = (known, users - 1)
                else:
                    del self._servers[address]
                    server.stop()
