"""A small HTTP server for operators: `/metrics` (Prometheus), `/healthz` (liveness), `/readyz`.

Runs in the process's event loop, so a stuck loop fails `/healthz` the way it should. Used by
the manager and by consumers (unless `JOBQUEUE_CONSUMER_HTTP_PORT` is -1).

Exposure: it binds `JOBQUEUE_HTTP_HOST` (loopback unless set; the chart and the Kubernetes
backend set `0.0.0.0`), answers only GET and HEAD (anything else: 405), and holds at most
`JOBQUEUE_HTTP_MAX_CONNECTIONS` connections: one more is closed at once. A client
gets `JOBQUEUE_HTTP_REQUEST_TIMEOUT_SECONDS` in all to send its request head, and as long again to
take the answer, so slow clients cannot pile up.
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from jobqueue.logs import get_logger
from jobqueue.preflight import port_in_use

if TYPE_CHECKING:
    from jobqueue.settings import Settings

log = get_logger("jobqueue.ops")

MAX_LINE_BYTES = 8192  # a longer request or header line is refused
MAX_HEADER_LINES = 100
ALLOWED_METHODS = ("GET", "HEAD")


class OpsServer:
    def __init__(
        self,
        port: int,
        registry: CollectorRegistry,
        healthy: Callable[[], bool],
        ready: Callable[[], Awaitable[bool]],
        host: str = "127.0.0.1",
        max_connections: int = 64,
        request_timeout: float = 10.0,
        variable: str = "",
    ) -> None:
        self.port, self.host = port, host
        self.variable = variable  # the setting that chose the port, named when it is taken
        self.registry = registry
        self.healthy = healthy
        self.ready = ready
        self.max_connections = max_connections
        self.request_timeout = request_timeout
        self.open_connections = 0
        self.refused_connections = 0
        self._warned_full = False
        self._held: dict[asyncio.StreamWriter, asyncio.Task[None]] = {}  # open connections and their handlers
        self._server: asyncio.Server | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, port: int, registry: CollectorRegistry, healthy: Callable[[], bool],
        ready: Callable[[], Awaitable[bool]], variable: str = "",
    ) -> OpsServer:
        return cls(port, registry, healthy, ready, host=settings.http_host, variable=variable,
                   max_connections=settings.http_max_connections, request_timeout=settings.http_request_timeout_seconds)

    @property
    def bound_address(self) -> tuple[str, int]:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    @property
    def bound_port(self) -> int:
        return self.bound_address[1]

    async def start(self) -> None:
        """Listen; a taken port raises `PreflightError` naming the setting (a start-up failure, exit 2)."""
        try:
            self._server = await asyncio.start_server(self._handle, self.host, self.port, limit=MAX_LINE_BYTES)
        except OSError as e:
            if e.errno != errno.EADDRINUSE or not self.variable:
                raise
            raise port_in_use(self.variable, self.host, self.port) from None
        log.info("ops server listening", host=self.host, port=self.bound_port,
                 url=f"http://{self.host}:{self.bound_port}/metrics",
                 paths=["/metrics", "/healthz", "/readyz"], max_connections=self.max_connections)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in self._held:
                writer.close()
            await asyncio.gather(*self._held.values(), return_exceptions=True)
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.open_connections >= self.max_connections:
            self._refuse(writer)
            return
        self.open_connections += 1
        handler = asyncio.current_task()
        assert handler is not None  # asyncio runs each connection's handler as a task
        self._held[writer] = handler
        try:
            async with asyncio.timeout(self.request_timeout):
                method, path = await self._read_head(reader)
            status, body, ctype, extra = await self._respond(method, path)
            head = (f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n{extra}"
                    "Connection: close\r\n\r\n")
            writer.write(head.encode() + (b"" if method == "HEAD" else body))
            async with asyncio.timeout(self.request_timeout):
                await writer.drain()
        except (TimeoutError, ConnectionError, ValueError):
            pass  # too slow, gone, or a line over the limit: drop it
        finally:
            writer.close()
            self._held.pop(writer, None)
            self.open_connections -= 1
            if self.open_connections < self.max_connections // 2:
                self._warned_full = False

    def _refuse(self, writer: asyncio.StreamWriter) -> None:
        self.refused_connections += 1
        if not self._warned_full:  # once per episode, not once per connection
            self._warned_full = True
            log.warning("ops server at its connection limit; refusing new connections",
                        max_connections=self.max_connections, setting="JOBQUEUE_HTTP_MAX_CONNECTIONS")
        writer.close()  # no answer: it would be lost to the reset that closing an unread socket sends

    async def _read_head(self, reader: asyncio.StreamReader) -> tuple[str, str]:
        """The method and path of the request line; headers are read and dropped."""
        request = await reader.readline()
        for _ in range(MAX_HEADER_LINES):
            if await reader.readline() in (b"\r\n", b"\n", b""):
                break
        else:
            raise ValueError("too many header lines")
        parts = request.decode("latin-1").split()
        if len(parts) != 3:
            return "", ""
        return parts[0], parts[1].split("?", 1)[0]

    async def _respond(self, method: str, path: str) -> tuple[str, bytes, str, str]:
        if not method:
            return "400 Bad Request", b"bad request\n", "text/plain", ""
        if method not in ALLOWED_METHODS:
            return "405 Method Not Allowed", b"method not allowed\n", "text/plain", "Allow: GET, HEAD\r\n"
        return (*await self._route(path), "")

    async def _route(self, path: str) -> tuple[str, bytes, str]:
        if path == "/metrics":
            return "200 OK", generate_latest(self.registry), CONTENT_TYPE_LATEST
        if path == "/healthz":
            ok = self.healthy()
        elif path == "/readyz":
            try:
                ok = await asyncio.wait_for(self.ready(), 5)
            except Exception:
                ok = False
        else:
            return "404 Not Found", b"not found\n", "text/plain"
        return ("200 OK", b"ok\n", "text/plain") if ok else ("503 Service Unavailable", b"unhealthy\n", "text/plain")
