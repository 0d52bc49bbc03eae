"""Console sign-ins: a random session id in the cookie, the identity and CSRF token in Redis.

    sessions = SessionStore(redis, keys, tokens, ttl_seconds)
    cookie, session = await sessions.create(identity, expires_at)   # after BearerAuthenticator.verify
    session = await sessions.get(cookie)                            # None: signed out, expired or revoked
    await sessions.delete(cookie)

The cookie holds 256 random bits and nothing else (never the token); Redis holds the record under the SHA-256 of
the cookie (`Keys.console_session`), so a copy of Redis gives no usable cookie. The record's TTL is the session
length, never past the token's own expiry; a session made from a `jq_` token ends as soon as that token is
revoked or expires (checked on each page). I/O: Redis only.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from redis.asyncio import Redis

from jobqueue.auth.identity import Identity, Role
from jobqueue.auth.tokens import TokenStore
from jobqueue.clock import Clock, system_clock
from jobqueue.keys import ConsoleSessionField, Keys

F = ConsoleSessionField


@dataclass(frozen=True)
class Session:
    """A signed-in browser: who it is, and the CSRF token its mutating forms must carry."""

    identity: Identity
    csrf: str

    def csrf_ok(self, sent: str | None) -> bool:
        return bool(sent) and hmac.compare_digest(self.csrf.encode(), (sent or "").encode())


def cookie_digest(cookie: str) -> str:
    """The name a session cookie is known by in Redis (never the cookie itself)."""
    return hashlib.sha256(cookie.encode("utf-8")).hexdigest()


class SessionStore:
    """Creates, reads and ends console sessions (the only writer of `<p>console-session:*`)."""

    def __init__(self, redis: Redis, keys: Keys, tokens: TokenStore, ttl_seconds: int,
                 clock: Clock = system_clock) -> None:
        self.redis, self.keys, self.tokens, self.ttl, self.clock = redis, keys, tokens, ttl_seconds, clock

    def _ttl(self, expires_at: datetime | None) -> int:
        """Seconds the session lasts: the configured length, cut at the token's expiry (at least 1)."""
        if expires_at is None:
            return self.ttl
        left = (expires_at - self.clock()).total_seconds()
        return max(1, min(self.ttl, math.floor(left)))

    async def create(self, identity: Identity, expires_at: datetime | None) -> tuple[str, Session]:
        """A new session of `identity` (already authenticated); the cookie value and the session."""
        cookie, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        fields = {F.OWNER.value: identity.owner, F.ROLE.value: identity.role.value, F.CSRF.value: csrf}
        if identity.team:
            fields[F.TEAM.value] = identity.team
        if identity.token_id:
            fields[F.TOKEN_ID.value] = identity.token_id
        key = self.keys.console_session(cookie_digest(cookie))
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=fields)
            pipe.expire(key, self._ttl(expires_at))
            await pipe.execute()
        return cookie, Session(identity, csrf)

    async def get(self, cookie: str | None) -> Session | None:
        """The session of a cookie; None when there is none, it expired, or its `jq_` token is no longer active."""
        if not cookie or len(cookie) > 100:
            return None
        key = self.keys.console_session(cookie_digest(cookie))
        raw = await cast(Awaitable[dict[bytes, bytes]], self.redis.hgetall(key))
        if not raw:
            return None
        data = {k.decode(): v.decode() for k, v in raw.items()}
        token_id = data.get(F.TOKEN_ID.value)
        if token_id is not None:
            info = await self.tokens.get(token_id)
            if info is None or info.state(self.clock()) != "active":
                await self.redis.delete(key)
                return None
        identity = Identity(owner=data[F.OWNER.value], team=data.get(F.TEAM.value), role=Role(data[F.ROLE.value]),
                            token_id=token_id)
        return Session(identity, data[F.CSRF.value])

    async def delete(self, cookie: str | None) -> None:
        if cookie and len(cookie) <= 100:
            await self.redis.delete(self.keys.console_session(cookie_digest(cookie)))
