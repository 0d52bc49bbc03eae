"""A small HTTP server for operators: `/metrics` (Prometheus), `/healthz` (liveness), `/readyz`.

Runs in the process's event loop, so a stuck loop fails `/healthz` the way it should. Used by
the manager and, when `JOBQUEUE_CONSUMER_HTTP_PORT` is set, by consumers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from jobqueue.logs import get_logger

log = get_logger("jobqueue.ops")


class OpsServer:
    def __init__(
        self,
        port: int,
        registry: CollectorRegistry,
        healthy: Callable[[], bool],
        ready: Callable[[], Awaitable[bool]],
        host: str = "0.0.0.0",  # noqa: S104 - scraped and probed from outside the pod
    ) -> None:
        self.port, self.host = port, host
        self.registry = registry
        self.healthy = healthy
        self.ready = ready
        self._server: asyncio.Server | None = None

    @property
    def bound_port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        log.info("ops server listening", port=self.bound_port, paths=["/metrics", "/healthz", "/readyz"])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass  # headers are not needed
            parts = request.decode("latin-1").split()
            path = parts[1].split("?", 1)[0] if len(parts) > 1 else ""
            status, body, ctype = await self._route(path)
            head = (f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                    "Connection: close\r\n\r\n")
            writer.write(head.encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

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
