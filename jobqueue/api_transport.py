"""The SDK's HTTP transport to the jobqueue API: httpx's interface over aiohttp's connection pool and C HTTP parser
(`httpx_aiohttp`, the transport the OpenAI and Anthropic SDKs offer), not httpx's default httpcore + h11.

    http = httpx.AsyncClient(base_url=url, transport=api_transport(url))

Why: a submission over HTTP cost the client 1.7 ms of CPU with httpcore (h11's pure-Python parser, anyio's cancel
scopes and socket attribute lookups on every request) and 1.2 ms with aiohttp (bench/api.py, 50 clients on 2 cores),
and on a machine the clients share with the service that CPU is latency. Nothing else changes: requests, responses,
timeouts (connect, read, pool) and errors are httpx's (the transport maps aiohttp's errors to `httpx.TransportError`s).

When the environment names a proxy for the API's URL (`HTTPS_PROXY`, `ALL_PROXY`, ... minus `NO_PROXY`), the answer is
None, httpx's own transport, which honours it: httpx applies environment proxies only to its own transports.

TLS (`tls_context`): one verifying context per process, made at the first https client: loading the CA bundle took
27 ms of CPU, and every httpx client and transport made its own, so a new SDK client cost 53 ms (two of them) before
it sent anything. An http URL reached without a proxy gets a context that verifies against no CA at all: it is never
used for the API, and anything sent over https through it is refused.

`ApiClient`: httpx's client, minus the cookie jar's work on responses that set no cookie (urllib's request and
response shims, ~0.08 ms a request: a tenth of a submission's client CPU). A response that sets one is handled
as httpx would.
"""

from __future__ import annotations

import functools
import ssl
import urllib.request
from typing import Any
from urllib.parse import urlsplit

import httpx
from aiohttp import ClientSession
from httpx_aiohttp import AiohttpTransport
from httpx_aiohttp.transport import AiohttpResponseStream

from jobqueue.tls_close import close_dropped_tls

MAX_CONNECTIONS = 100  # httpx's default pool size
READ_CHUNK_BYTES = 1 << 20  # the most a response body's read hands over at once (the library's default: 16 KiB)


class ApiTransport(AiohttpTransport):
    """`AiohttpTransport` whose response bodies come in reads of up to READ_CHUNK_BYTES. A read returns whatever
    has arrived, up to that size, so nothing waits for a full chunk; a 16 MB result took ~1,000 reads at the
    library's 16 KiB and downloaded in 37-38 ms, 34 ms with 1 MiB (bench/api.py's 2M-row download, A/B)."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        if isinstance(response.stream, AiohttpResponseStream):
            response.stream.CHUNK_SIZE = READ_CHUNK_BYTES  # the instance's, over the class's constant
        return response

    def get_client(self) -> ClientSession:
        """The library's session, whose connector closes the TLS sockets of connections dropped mid-response (a read
        that timed out, a cancelled download) when it closes, instead of leaving them to the garbage collector
        (`close_dropped_tls`)."""
        session = super().get_client()
        close_dropped_tls(session.connector)
        return session


def environment_proxy(url: str) -> str | None:
    """The proxy the environment gives for `url` (what httpx would use with trust_env), or None."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return proxy


@functools.cache
def verifying_tls() -> ssl.SSLContext:
    """httpx's verifying context (its CA bundle, or SSL_CERT_FILE / SSL_CERT_DIR), made once per process."""
    return httpx.create_ssl_context()


def tls_context(url: str) -> ssl.SSLContext:
    """What a client of `url` verifies TLS with: `verifying_tls()` for https, or through a proxy (which may be
    an https one); for plain http, a context that verifies but trusts no CA (made in microseconds: it is never
    used, and if it were it would refuse)."""
    if urlsplit(url).scheme == "https" or environment_proxy(url) is not None:
        return verifying_tls()
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname and CERT_REQUIRED, with no CA loaded


class _ResponseCookies(httpx.Cookies):
    def extract_cookies(self, response: httpx.Response) -> None:
        if "set-cookie" in response.headers:
            super().extract_cookies(response)


class ApiClient(httpx.AsyncClient):
    """`httpx.AsyncClient` that looks for cookies only in responses that set one (see the module's text)."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self._jar = _ResponseCookies(super().cookies)

    @property
    def cookies(self) -> httpx.Cookies:
        return self._jar

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        self._jar = _ResponseCookies(cookies)


def api_client(url: str, headers: dict[str, str], timeout: httpx.Timeout) -> ApiClient:
    """The SDK's client of the API at `url`: `api_transport`, `tls_context`, `ApiClient`."""
    verify = tls_context(url)
    return ApiClient(base_url=url, headers=headers, transport=api_transport(url, verify), verify=verify,
                     timeout=timeout)


def api_transport(url: str, verify: ssl.SSLContext | None = None) -> httpx.AsyncBaseTransport | None:
    """The transport for the API at `url`: aiohttp's, or None (httpx's own) when a proxy applies to it."""
    if environment_proxy(url) is not None:
        return None
    return ApiTransport(limits=httpx.Limits(max_connections=MAX_CONNECTIONS), verify=verify or tls_context(url))
