"""The signing keys of an OpenID Connect issuer (its JWKS), fetched over HTTP and cached. The I/O of OIDC.

    keys = JwksCache(issuer="https://login.example.com", jwks_url="")  # "": discovered from the issuer
    jwk = await keys.key(kid, alg)   # None: the issuer has no such key (after one refresh); JwksUnavailable: no keys

The key set is kept `ttl` seconds, then fetched again (a failed refresh keeps the keys it had). A key id it does
not know triggers a refresh at once, so a rotated key works on its first token, but at most once per
`min_refresh` seconds: tokens with made-up key ids cannot make the service hammer the identity provider.
Fetching runs in a thread (`urllib`), never blocking the event loop; concurrent misses share one fetch.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from jwt import PyJWK
from jwt.exceptions import PyJWTError

from jobqueue.errors import JobQueueError
from jobqueue.logs import get_logger

log = get_logger("jobqueue.auth.jwks")
DISCOVERY_PATH = "/.well-known/openid-configuration"
MAX_DOCUMENT_BYTES = 1 << 20  # a JWKS or discovery document is a few KiB


class JwksUnavailable(JobQueueError):
    """The issuer's keys could not be fetched and none are cached: no JWT can be checked now."""


def fetch_json(url: str, timeout: float) -> dict[str, Any]:
    """GET `url` as a JSON object (blocking: run it in a thread)."""
    if not url.startswith(("https://", "http://")):
        raise JwksUnavailable(f"{url!r} is not an http(s) URL")
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (scheme checked above)
            body = response.read(MAX_DOCUMENT_BYTES + 1)
    except (urllib.error.URLError, OSError) as e:
        raise JwksUnavailable(f"cannot fetch {url}: {e}") from e
    if len(body) > MAX_DOCUMENT_BYTES:
        raise JwksUnavailable(f"{url} answered more than {MAX_DOCUMENT_BYTES} bytes")
    try:
        document = json.loads(body)
    except ValueError as e:
        raise JwksUnavailable(f"{url} did not answer JSON: {e}") from e
    if not isinstance(document, dict):
        raise JwksUnavailable(f"{url} did not answer a JSON object")
    return document


class JwksCache:
    """One issuer's signing keys by key id, cached (see the module docstring)."""

    def __init__(self, issuer: str, jwks_url: str = "", *, ttl: float = 300.0, min_refresh: float = 10.0,
                 timeout: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.issuer = issuer.rstrip("/")
        self.jwks_url = jwks_url
        self.ttl, self.min_refresh, self.timeout, self.clock = ttl, min_refresh, timeout, clock
        self._keys: dict[str, dict[str, Any]] = {}  # kid ("" for a key without one) -> the JWK
        self._prepared: dict[tuple[str, str], PyJWK] = {}
        self._loaded_at: float | None = None  # when the keys were last fetched
        self._attempted_at: float | None = None  # when a fetch was last tried (rate limit)
        self._error: str | None = None  # why the last fetch failed
        self._generation = 0  # fetches tried: concurrent misses share one
        self._lock = asyncio.Lock()

    @property
    def url(self) -> str:
        """The JWKS URL: the setting, else what discovery found (empty until then)."""
        return self.jwks_url

    async def key(self, kid: str | None, alg: str) -> PyJWK | None:
        """The key `kid` names, for `alg`; a token without a key id gets the issuer's only key. None when the issuer
        does not have it (after a refresh, unless one was tried less than `min_refresh` seconds ago).
        `JwksUnavailable` when no key could ever be fetched."""
        now = self.clock()
        expired = self._loaded_at is None or now - self._loaded_at >= self.ttl
        may_fetch = self._attempted_at is None or now - self._attempted_at >= self.min_refresh
        if (expired or self._find(kid) is None) and may_fetch:
            await self._refresh()
        if not self._keys:
            raise JwksUnavailable(self._error or f"no signing keys of {self.issuer} are known yet")
        jwk = self._find(kid)
        if jwk is None:
            return None
        name = str(jwk.get("alg") or alg)
        cache_key = (str(kid or ""), name)
        if cache_key not in self._prepared:
            self._prepared[cache_key] = PyJWK(jwk, algorithm=name)
        return self._prepared[cache_key]

    def _find(self, kid: str | None) -> dict[str, Any] | None:
        if kid is None:
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    async def _refresh(self) -> None:
        generation = self._generation
        async with self._lock:
            if self._generation != generation:
                return  # another request fetched while this one waited
            self._generation += 1
            self._attempted_at = self.clock()
            try:
                self._install(await asyncio.to_thread(self._fetch))
            except JwksUnavailable as e:  # the keys known stay in use
                self._error = str(e)
                log.warning("could not fetch the OIDC signing keys", issuer=self.issuer, error=self._error,
                            keeping=sorted(self._keys))
                return
            self._loaded_at, self._error = self.clock(), None

    def _fetch(self) -> dict[str, Any]:
        if not self.jwks_url:
            discovery = fetch_json(self.issuer + DISCOVERY_PATH, self.timeout)
            uri = discovery.get("jwks_uri")
            if not isinstance(uri, str) or not uri:
                raise JwksUnavailable(f"{self.issuer}{DISCOVERY_PATH} has no jwks_uri; set JOBQUEUE_OIDC_JWKS_URL")
            self.jwks_url = uri
        return fetch_json(self.jwks_url, self.timeout)

    def _install(self, document: dict[str, Any]) -> None:
        keys: dict[str, dict[str, Any]] = {}
        for jwk in document.get("keys") or []:
            if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
                continue
            try:
                PyJWK(jwk)  # a key this library can use (a type it knows, with the cryptography backend)
            except PyJWTError:
                continue
            keys[str(jwk.get("kid") or "")] = jwk
        if not keys:
            raise JwksUnavailable(f"{self.jwks_url} lists no usable signing key")
        if keys != self._keys:
            log.info("OIDC signing keys loaded", url=self.jwks_url, key_ids=sorted(keys))
        self._keys, self._prepared = keys, {}
