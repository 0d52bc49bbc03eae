"""The SDK's HTTP transport (jobqueue.api_transport): aiohttp under httpx unless the environment names a proxy for
the API, and every way an API can fail to answer is the SDK's `ApiUnavailableError` naming the URL, as it was with
httpx's own transport: nothing listening, a connection closed without an answer, an answer that never comes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from httpx_aiohttp import AiohttpTransport
from pydantic import SecretStr

from jobqueue.api_transport import READ_CHUNK_BYTES, api_transport, environment_proxy
from jobqueue.errors import ApiUnavailableError
from jobqueue.http_backend import HttpBackend

PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture
def no_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    return monkeypatch


def test_aiohttp_without_a_proxy(no_proxy_environment: pytest.MonkeyPatch) -> None:
    assert environment_proxy("https://jobqueue.example.com") is None
    assert isinstance(api_transport("https://jobqueue.example.com"), AiohttpTransport)


def test_httpx_own_transport_when_a_proxy_applies(no_proxy_environment: pytest.MonkeyPatch) -> None:
    no_proxy_environment.setenv("HTTPS_PROXY", "http://proxy.corp:3128")
    assert environment_proxy("https://jobqueue.example.com") == "http://proxy.corp:3128"
    assert api_transport("https://jobqueue.example.com") is None  # httpx's transport honours HTTPS_PROXY
    assert isinstance(api_transport("http://jobqueue.example.com"), AiohttpTransport)  # no proxy for http
    no_proxy_environment.setenv("NO_PROXY", "jobqueue.example.com")
    assert isinstance(api_transport("https://jobqueue.example.com"), AiohttpTransport)


@contextlib.asynccontextmanager
async def tcp_server(handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
                     ) -> AsyncIterator[str]:
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()


async def _refused(url: str) -> None:
    backend = HttpBackend(url, SecretStr("jq_x"), timeout=1.0)
    try:
        with pytest.raises(ApiUnavailableError, match=f"cannot reach the jobqueue API at {url}"):
            await backend.groups()
    finally:
        await backend.aclose()


async def test_nothing_listening(no_proxy_environment: pytest.MonkeyPatch) -> None:
    async with tcp_server(lambda r, w: asyncio.sleep(0)) as url:
        pass  # the port, free again
    await _refused(url)


async def test_a_connection_closed_without_an_answer(no_proxy_environment: pytest.MonkeyPatch) -> None:
    async def close_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    async with tcp_server(close_at_once) as url:
        await _refused(url)


async def test_an_answer_that_never_comes(no_proxy_environment: pytest.MonkeyPatch) -> None:
    hold = asyncio.Event()

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await hold.wait()
        writer.close()

    async with tcp_server(never_answer) as url:
        try:
            await _refused(url)  # the backend's read timeout, 1 s
        finally:
            hold.set()


async def test_a_large_body_is_read_in_large_pieces(no_proxy_environment: pytest.MonkeyPatch) -> None:
    """Reads hand over what has arrived, up to READ_CHUNK_BYTES, not the library's 16 KiB at a time."""
    body = bytes(range(256)) * (16 << 10)  # 4 MiB

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()
        writer.close()

    async with tcp_server(answer) as url, httpx.AsyncClient(transport=api_transport(url)) as http, \
            http.stream("GET", url) as response:
        pieces = [len(chunk) async for chunk in response.aiter_raw()]
    assert sum(pieces) == len(body)
    assert max(pieces) > 16 << 10, pieces[:20]
    assert max(pieces) <= READ_CHUNK_BYTES
