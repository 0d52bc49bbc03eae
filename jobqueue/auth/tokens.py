"""API tokens in Redis: create, list, revoke, and authenticate a bearer token. The I/O of `jobqueue.auth`.

A token is `jq_<id>_<secret>`: `<id>` (12 hex digits) names it in `jobqueue tokens list` and `revoke`, and finds its
record `<prefix>token:<id>` in one read; `<secret>` is 32 random bytes (urlsafe base64). Redis holds only the
SHA-256 of the whole token, never the token: whoever reads Redis cannot call the API with it.

Why SHA-256 and not bcrypt/argon2: those are slow on purpose, to make guessing a low-entropy *password* from its
hash expensive. A token has 256 random bits; nobody can enumerate them at any hash speed, so a slow hash would
add no safety and cost tens of milliseconds of CPU on every API request. The comparison is constant-time.

`verify(token)` says why a token is refused (`AuthFailure`: missing, unknown, expired, revoked), for a 401 that
tells the caller what to do; `authenticate(token)` is the same as an `Identity` or None.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from redis.asyncio import Redis

from jobqueue.attribution import OWNER_PATTERN, TEAM_PATTERN
from jobqueue.auth.identity import Identity, Role
from jobqueue.clock import Clock, system_clock
from jobqueue.errors import JobQueueError
from jobqueue.keys import Keys, TokenField

TOKEN_PREFIX = "jq"
_TOKEN_RE = re.compile(r"^jq_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
_ID_RE = re.compile(r"^(?:jq_)?([0-9a-f]{12})$")
LAST_USED_RESOLUTION = timedelta(minutes=1)  # `last_used_at` is written at most this often per token


class TokenError(JobQueueError, ValueError):
    """A token cannot be created or revoked as asked (the message says why and what to do)."""


class AuthFailure(enum.StrEnum):
    MISSING = "missing"
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    REVOKED = "revoked"


FAILURE_MESSAGES = {
    AuthFailure.MISSING: "no API token: send `Authorization: Bearer <token>` (JOBQUEUE_API_TOKEN); an admin creates "
                         "one with `jobqueue tokens create`",
    AuthFailure.UNKNOWN: "this API token is not known here (mistyped, or of another environment); ask an admin for "
                         "a token of this environment",
    AuthFailure.EXPIRED: "this API token has expired; ask an admin for a new one (`jobqueue tokens create`)",
    AuthFailure.REVOKED: "this API token was revoked; ask an admin for a new one (`jobqueue tokens create`)",
}


@dataclass(frozen=True)
class Authentication:
    """What `verify` found: an identity, or why there is none."""

    identity: Identity | None
    failure: AuthFailure | None = None

    @property
    def message(self) -> str:
        return FAILURE_MESSAGES[self.failure] if self.failure else "authenticated"


@dataclass(frozen=True)
class TokenInfo:
    """A token as `jobqueue tokens list` shows it: everything but the token."""

    token_id: str
    owner: str
    team: str | None
    role: Role
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    @property
    def prefix(self) -> str:
        """How the token starts: enough to recognise it, nothing to use."""
        return f"{TOKEN_PREFIX}_{self.token_id}_"

    def state(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return AuthFailure.REVOKED.value
        if self.expires_at is not None and self.expires_at <= now:
            return AuthFailure.EXPIRED.value
        return "active"


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class TokenStore:
    """The API tokens of one environment: the only writer of `<prefix>token:<id>` and `<prefix>tokens`."""

    def __init__(self, redis: Redis, keys: Keys, clock: Clock = system_clock) -> None:
        self.redis = redis
        self.keys = keys
        self.clock = clock

    async def create(self, owner: str, role: Role, team: str | None = None,
                     expires_in: timedelta | None = None) -> tuple[str, TokenInfo]:
        """A new token and its record; the token is returned here once and never again."""
        if not re.match(OWNER_PATTERN, owner):
            raise TokenError(f"owner {owner!r} is not valid; use letters, digits, '_', '.', '@', '+' or '-'")
        if team is not None and not re.match(TEAM_PATTERN, team):
            raise TokenError(f"team {team!r} is not valid; use lowercase letters, digits, '_' or '-'")
        if expires_in is not None and expires_in <= timedelta(0):
            raise TokenError("expires must be in the future, e.g. 90d")
        now = self.clock()
        token_id = secrets.token_hex(6)
        token = f"{TOKEN_PREFIX}_{token_id}_{secrets.token_urlsafe(32)}"
        info = TokenInfo(token_id, owner, team, role, now, now + expires_in if expires_in else None, None, None)
        fields = {TokenField.SHA256.value: token_sha256(token), TokenField.OWNER.value: owner,
                  TokenField.ROLE.value: role.value, TokenField.CREATED_AT.value: now.isoformat()}
        if team is not None:
            fields[TokenField.TEAM.value] = team
        if info.expires_at is not None:
            fields[TokenField.EXPIRES_AT.value] = info.expires_at.isoformat()
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.token(token_id), mapping=fields)
            pipe.zadd(self.keys.tokens, {token_id: now.timestamp() * 1000})
            await pipe.execute()
        return token, info

    async def get(self, token_id: str) -> TokenInfo | None:
        m = _ID_RE.match(token_id.strip())
        if not m:
            return None
        raw = await cast(Awaitable[dict[bytes, bytes]], self.redis.hgetall(self.keys.token(m.group(1))))
        return _info(m.group(1), raw) if raw else None

    async def tokens(self) -> list[TokenInfo]:
        """Every token, oldest first (revoked and expired ones too: they are kept as a record)."""
        ids = [i.decode() for i in await self.redis.zrange(self.keys.tokens, 0, -1)]
        async with self.redis.pipeline(transaction=False) as pipe:
            for token_id in ids:
                pipe.hgetall(self.keys.token(token_id))
            rows = await pipe.execute()
        return [_info(i, raw) for i, raw in zip(ids, rows, strict=True) if raw]

    async def revoke(self, token_id: str) -> TokenInfo:
        """Revoke a token by its id (or its `jq_<id>` prefix): it is refused from now on. Revoking a revoked token
        changes nothing. `TokenError` when there is no such token."""
        info = await self.get(token_id)
        if info is None:
            raise TokenError(f"no token {token_id!r}; `jobqueue tokens list` shows the ids")
        if info.revoked_at is None:
            now = self.clock()
            await cast(Awaitable[int], self.redis.hsetnx(self.keys.token(info.token_id), TokenField.REVOKED_AT,
                                                          now.isoformat()))
            info = await self.get(info.token_id) or info
        return info

    async def verify(self, token: str | None) -> Authentication:
        """The identity of a bearer token, or why it is refused. One read; a write at most once a minute (last
        used)."""
        if not token or not token.strip():
            return Authentication(None, AuthFailure.MISSING)
        m = _TOKEN_RE.match(token.strip())
        if not m:
            return Authentication(None, AuthFailure.UNKNOWN)
        token_id = m.group(1)
        raw = await cast(Awaitable[dict[bytes, bytes]], self.redis.hgetall(self.keys.token(token_id)))
        stored = raw.get(TokenField.SHA256.value.encode(), b"").decode()
        if not stored or not hmac.compare_digest(stored, token_sha256(token.strip())):
            return Authentication(None, AuthFailure.UNKNOWN)
        info = _info(token_id, raw)
        now = self.clock()
        state = info.state(now)
        if state != "active":
            return Authentication(None, AuthFailure(state))
        if info.last_used_at is None or now - info.last_used_at >= LAST_USED_RESOLUTION:
            await cast(Awaitable[int], self.redis.hset(self.keys.token(token_id), TokenField.LAST_USED_AT,
                                                        now.isoformat()))
        return Authentication(Identity(owner=info.owner, team=info.team, role=info.role, token_id=token_id))

    async def authenticate(self, token: str | None) -> Identity | None:
        """The identity of a bearer token; None when it is refused (`verify` says why)."""
        return (await self.verify(token)).identity


def _info(token_id: str, raw: dict[bytes, bytes]) -> TokenInfo:
    data = {k.decode(): v.decode() for k, v in raw.items()}

    def when(field: TokenField) -> datetime | None:
        value = data.get(field.value)
        return datetime.fromisoformat(value) if value else None

    created = when(TokenField.CREATED_AT)
    assert created is not None, f"token {token_id} has no {TokenField.CREATED_AT}"
    return TokenInfo(token_id=token_id, owner=data[TokenField.OWNER], team=data.get(TokenField.TEAM),
                     role=Role(data[TokenField.ROLE]), created_at=created, expires_at=when(TokenField.EXPIRES_AT),
                     revoked_at=when(TokenField.REVOKED_AT), last_used_at=when(TokenField.LAST_USED_AT))
