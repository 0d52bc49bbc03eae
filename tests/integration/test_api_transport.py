"""The SDK's HTTP transport (jobqueue.api_transport): aiohttp under httpx unless the environment names a proxy for
the API, and every way an API can fail to answer is the SDK's `ApiUnavailableError` naming the URL, as it was with
httpx's own transport: nothing listening, a connection closed without an answer, an answer that never comes."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import subprocess
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from httpx_aiohttp import AiohttpTransport
from pydantic import SecretStr

from jobqueue.api_transport import (
    READ_CHUNK_BYTES,
    ApiClient,
    ApiTransport,
    api_client,
    api_transport,
    environment_proxy,
    tls_context,
    verifying_tls,
)
from jobqueue.errors import ApiUnavailableError
from jobqueue.http_backend import HttpBackend
from tests.helpers import unraisable_after_own_loops

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


async def test_a_cookie_an_answer_sets_is_kept_and_answers_without_one_leave_the_jar_alone(
        no_proxy_environment: pytest.MonkeyPatch) -> None:
    """`ApiClient` skips the cookie jar only for answers that set no cookie: one that does is kept, as httpx keeps
    it, and sent back on the next request."""
    seen: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while head := await reader.readuntil(b"\r\n\r\n"):
            seen.append(head)
            sets = b"set-cookie: lb=a1; Path=/\r\n" if len(seen) == 1 else b""
            writer.write(b"HTTP/1.1 200 OK\r\n" + sets + b"content-length: 2\r\n\r\nok")
            await writer.drain()
            if len(seen) == 3:
                break
        writer.close()

    async with tcp_server(answer) as url:
        http = api_client(url, {}, httpx.Timeout(5.0))
        async with http:
            for _ in range(3):
                assert (await http.get("/v1/healthz")).status_code == 200
        assert http.cookies.get("lb") == "a1"
    assert b"cookie: lb=a1" not in seen[0].lower()
    assert b"cookie: lb=a1" in seen[1].lower() and b"cookie: lb=a1" in seen[2].lower()


@pytest.mark.parametrize("base", ["http://127.0.0.1:8080", "http://127.0.0.1:8080/", "https://jq.example/prefix",
                                  "https://jq.example/prefix/"])
def test_request_urls_are_the_ones_httpx_would_build(base: str, no_proxy_environment: pytest.MonkeyPatch) -> None:
    """`HttpBackend._url` builds in one parse what httpx builds from a relative path and params in three."""
    backend = HttpBackend(base, SecretStr("jq_x"))
    httpx_client = httpx.Client(base_url=base)
    cases: list[tuple[str, object]] = [
        ("/v1/jobs", [("output", "user.f0"), ("output", "user.a b"), ("tag", "k=v&w=é/?#"), ("priority", "high")]),
        ("/v1/jobs/01JABC", {"wait": 1.5, "flag": True, "off": False, "none": None}),
        ("/v1/jobs", None), ("/v1/jobs", []), ("/v1/registry/versions/v%202", {"limit": 10}),
    ]
    for path, params in cases:
        want = httpx_client.build_request("GET", path, params=params).url  # type: ignore[arg-type]
        assert backend._url(path, params) == want, (path, params)  # type: ignore[arg-type]
    httpx_client.close()


def test_tls_is_loaded_once_per_process_and_an_http_client_loads_no_ca_bundle(
        no_proxy_environment: pytest.MonkeyPatch) -> None:
    """A new SDK client made two CA-bundle-loading TLS contexts (27 ms each here); now https clients share the
    process's verifying context, and an http one gets one that trusts nothing."""
    plain = tls_context("http://127.0.0.1:8080")
    assert plain.verify_mode is ssl.CERT_REQUIRED and plain.check_hostname
    assert plain.cert_store_stats()["x509_ca"] == 0
    secure = tls_context("https://jq.example")
    assert secure is tls_context("https://other.example") is verifying_tls()
    assert secure.verify_mode is ssl.CERT_REQUIRED and secure.cert_store_stats()["x509_ca"] > 0
    one, two = HttpBackend("https://jq.example", SecretStr("jq_x")), HttpBackend("https://jq.example", SecretStr("x"))
    transports = [b._http._transport for b in (one, two)]
    assert all(isinstance(t, AiohttpTransport) and t.ssl_context is secure for t in transports)
    assert one.presigned._client is None  # the object store's client is made at its first transfer
    no_proxy_environment.setenv("HTTP_PROXY", "https://proxy.corp:3128")  # TLS to the proxy, for an http API
    assert tls_context("http://jobqueue.example.com") is secure


@pytest.fixture
def tls_server_that_stalls(tmp_path: Path) -> Iterator[tuple[str, ssl.SSLContext]]:
    """An https server, on an event loop of its own in another thread, that answers 64 KiB of a 100 MB body and
    then nothing; and a client context that trusts its certificate."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(tmp_path / "key.pem"),
                    "-out", str(tmp_path / "cert.pem")], check=True, capture_output=True)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    loop = asyncio.new_event_loop()
    handlers: set[asyncio.Task[None]] = set()

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.add(asyncio.current_task())  # type: ignore[arg-type]  # never None in a handler
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n" + b"x" * 65536)
        await writer.drain()
        with contextlib.suppress(ConnectionError):
            await reader.read()  # until the client closes
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()

    async def shut_down() -> None:  # the server's own sockets closed before its loop stops
        server.close()
        await server.wait_closed()
        await asyncio.wait_for(asyncio.gather(*handlers), timeout=10)

    server = loop.run_until_complete(asyncio.start_server(stall, "127.0.0.1", 0, ssl=server_tls))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}", ssl.create_default_context(
            cafile=tmp_path / "cert.pem")
    finally:
        asyncio.run_coroutine_threadsafe(shut_down(), loop).result(timeout=20)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def test_a_download_that_times_out_over_tls_leaves_no_socket_for_the_garbage_collector(
        tls_server_that_stalls: tuple[str, ssl.SSLContext], no_proxy_environment: pytest.MonkeyPatch) -> None:
    """A result download over https stalls, the read times out and the client is closed: once the event loop has
    ended (the sync SDK's ends with the client), no socket is left open. Python 3.11 left it, every time, for the
    garbage collector to close with a ResourceWarning (`jobqueue.tls_close`)."""
    url, trusted = tls_server_that_stalls

    async def download_until_the_read_times_out(round_: int) -> None:
        client = ApiClient(base_url=url, transport=ApiTransport(verify=trusted), verify=trusted,
                           timeout=httpx.Timeout(10.0, read=0.3))
        received = 0
        try:
            with pytest.raises(httpx.ReadTimeout):
                async with client.stream("GET", "/v1/jobs/j/result") as response:
                    async for chunk in response.aiter_bytes():
                        received += len(chunk)
            assert received == 65536, "the body started: the connection was dropped mid-response"
        finally:
            await client.aclose()

    assert unraisable_after_own_loops(download_until_the_read_times_out, 3) == []
