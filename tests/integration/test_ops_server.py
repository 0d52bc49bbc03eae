"""The operators' HTTP endpoints over real sockets: loopback by default, a connection cap, slow
clients dropped, and only GET/HEAD answered."""

from __future__ import annotations

import asyncio
import contextlib
import time

from prometheus_client import CollectorRegistry

from jobqueue.ops_server import OpsServer
from jobqueue.settings import Settings
from tests.helpers import eventually


async def _ready() -> bool:
    return True


def server(**kwargs) -> OpsServer:
    return OpsServer(0, CollectorRegistry(), lambda: True, _ready, **kwargs)


async def request(port: int, head: bytes) -> bytes:
    """Send a raw request head, return everything the server sends until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        await writer.wait_closed()


async def test_binds_loopback_unless_told_otherwise():
    assert Settings().http_host == "127.0.0.1"
    for ops in (server(), OpsServer.from_settings(Settings(), 0, CollectorRegistry(), lambda: True, _ready)):
        await ops.start()
        try:
            assert ops.bound_address[0] == "127.0.0.1"
        finally:
            await ops.stop()
    ops = OpsServer.from_settings(Settings(http_host="0.0.0.0"), 0, CollectorRegistry(), lambda: True, _ready)
    await ops.start()
    try:
        assert ops.bound_address[0] == "0.0.0.0"
        assert (await request(ops.bound_port, b"GET /healthz HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 200 OK")
    finally:
        await ops.stop()


async def test_only_get_and_head_are_answered():
    ops = server()
    await ops.start()
    try:
        for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"):
            answer = await request(ops.bound_port, f"{method} /healthz HTTP/1.1\r\nContent-Length: 0\r\n\r\n".encode())
            head = answer.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
            assert head[0] == b"HTTP/1.1 405 Method Not Allowed", (method, answer)
            assert b"Allow: GET, HEAD" in head, answer
        got = await request(ops.bound_port, b"GET /healthz HTTP/1.1\r\n\r\n")
        assert got.startswith(b"HTTP/1.1 200 OK") and got.endswith(b"\r\n\r\nok\n")
        head_only = await request(ops.bound_port, b"HEAD /healthz HTTP/1.1\r\n\r\n")
        assert head_only.startswith(b"HTTP/1.1 200 OK") and head_only.endswith(b"Content-Length: 3\r\n"
                                                                               b"Connection: close\r\n\r\n")
        assert (await request(ops.bound_port, b"garbage\r\n\r\n")).startswith(b"HTTP/1.1 400 ")
    finally:
        await ops.stop()


async def test_slow_clients_are_capped_and_dropped():
    """Slowloris: many connections that drip a header byte at a time. The server holds at most the cap,
    closes the rest at once, drops the held ones after the request timeout although they keep
    sending, and then answers a fresh request."""
    cap, clients, timeout = 8, 40, 1.0
    ops = server(max_connections=cap, request_timeout=timeout)
    await ops.start()
    writers: list[asyncio.StreamWriter] = []
    ended: list[asyncio.Task[float]] = []  # per connection: seconds from its opening until the server closed it
    peak = 0

    async def until_closed(reader: asyncio.StreamReader) -> float:
        opened = time.monotonic()
        with contextlib.suppress(ConnectionError):  # closed unread: a reset instead of an end of file
            assert await reader.read() == b""  # never an answer
        return time.monotonic() - opened

    async def dripping() -> bool:
        """One more byte on every open connection, of a header line that never ends."""
        nonlocal peak
        peak = max(peak, ops.open_connections)
        for writer, end in zip(writers, ended, strict=True):
            if not end.done():
                with contextlib.suppress(ConnectionError):
                    writer.write(b"X")
                    await writer.drain()
        await asyncio.sleep(0.1)
        peak = max(peak, ops.open_connections)
        return all(end.done() for end in ended)

    try:
        for _ in range(clients):
            reader, writer = await asyncio.open_connection("127.0.0.1", ops.bound_port)
            writer.write(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
            writers.append(writer)
            ended.append(asyncio.create_task(until_closed(reader)))
        await eventually(dripping, timeout=30, what="the slow connections to be dropped")
        assert ops.open_connections == 0 and peak == cap
        assert ops.refused_connections == clients - cap
        held = sorted(end.result() for end in ended)[-cap:]
        assert len([t for t in held if t >= timeout * 0.9]) == cap, held  # held the timeout, and no more
        fresh = await request(ops.bound_port, b"GET /healthz HTTP/1.1\r\n\r\n")
        assert fresh.startswith(b"HTTP/1.1 200 OK"), fresh
    finally:
        for end in ended:
            end.cancel()
        for writer in writers:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        await ops.stop()


async def test_stop_ends_the_connections_it_holds():
    ops = server()
    await ops.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", ops.bound_port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\n")  # a request head that never ends
        await eventually(lambda: ops.open_connections == 1, timeout=10, what="the connection to be held")
        await asyncio.wait_for(ops.stop(), 5)
        assert ops.open_connections == 0
        with contextlib.suppress(ConnectionError):  # closed with the head unread: a reset or an end of file
            assert await asyncio.wait_for(reader.read(), 5) == b""
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
