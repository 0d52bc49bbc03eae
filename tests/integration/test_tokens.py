"""API tokens: `jobqueue tokens create | list | revoke` and `TokenStore.verify`, against the real Redis. The token
is printed once and never stored: Redis holds its SHA-256 only."""

from __future__ import annotations

import asyncio
import hashlib
import re
from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

from jobqueue.auth.identity import Identity, Role
from jobqueue.auth.tokens import AuthFailure, TokenError, TokenStore
from jobqueue.cli.main import app
from jobqueue.keys import Keys, TokenField
from jobqueue.redis import connect_redis


def run(settings, *args):
    env = {"JOBQUEUE_REDIS_URL": settings.redis_url, "JOBQUEUE_ENVIRONMENT": settings.environment,
           "JOBQUEUE_HOME": str(settings.home), "COLUMNS": "250"}
    result = CliRunner().invoke(app, ["tokens", *args], env=env)
    return result.exit_code, result.stdout, result.stderr


def with_store(settings, fn, clock=None):
    async def go():
        redis = connect_redis(settings)
        try:
            store = TokenStore(redis, Keys.for_environment(settings.environment), **({"clock": clock} if clock else {}))
            return await fn(store, redis)
        finally:
            await redis.aclose()
    return asyncio.run(go())


async def everything_stored(store, redis):
    """Every key of this environment with every byte of its value, as text."""
    dumped = []
    async for key in redis.scan_iter(match=f"{store.keys.prefix}*"):
        kind = (await redis.type(key)).decode()
        value = (await redis.hgetall(key) if kind == "hash" else await redis.zrange(key, 0, -1, withscores=True)
                 if kind == "zset" else await redis.get(key))
        dumped.append(f"{key!r} {value!r}")
    return "\n".join(dumped)


def test_create_list_revoke_through_the_cli(settings):
    code, out, err = run(settings, "create", "--owner", "alice", "--team", "risk", "--role", "operator",
                         "--expires", "90d")
    assert code == 0, err
    token = out.strip()
    assert re.fullmatch(r"jq_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", token), out
    token_id = token.split("_")[1]
    assert f"token {token_id} for alice (role operator, team risk, expires " in err and "not shown again" in err

    stored = with_store(settings, everything_stored)
    assert token not in stored and token.split("_", 2)[2] not in stored  # neither the token nor its secret part
    assert hashlib.sha256(token.encode()).hexdigest() in stored

    identity = with_store(settings, lambda store, _: store.authenticate(token))
    assert identity == Identity(owner="alice", team="risk", role=Role.OPERATOR, token_id=token_id)

    code, out, err = run(settings)  # `jobqueue tokens` lists
    assert code == 0, err
    row = next(line for line in out.splitlines() if token_id in line)
    assert all(w in row for w in ("alice", "risk", "operator", "active", f"jq_{token_id}_")), row
    assert token.split("_", 2)[2] not in out
    created = with_store(settings, lambda store, _: store.get(token_id))
    assert created.last_used_at is not None  # the authentication above
    assert created.expires_at - created.created_at == timedelta(days=90)

    code, out, err = run(settings, "revoke", token_id)
    assert code == 0 and f"token {token_id} of alice is revoked" in out, (out, err)
    verified = with_store(settings, lambda store, _: store.verify(token))
    assert verified.identity is None and verified.failure is AuthFailure.REVOKED
    assert "revoked" in verified.message and "jobqueue tokens create" in verified.message
    code, out, _ = run(settings)
    assert "revoked" in next(line for line in out.splitlines() if token_id in line)

    code, out, err = run(settings, "revoke", "0123456789ab")
    assert code == 1 and "no token '0123456789ab'" in err, (out, err)
    code, out, err = run(settings, "create", "--owner", "alice", "--expires", "soon")
    assert code == 1 and "--expires: window 'soon'" in err, (out, err)
    code, out, err = run(settings, "create", "--owner", "alice", "--team", "Risk Team")
    assert code == 1 and "team 'Risk Team' is not valid" in err, (out, err)


def test_an_expired_token_is_refused_and_listed_as_expired(settings):
    past = datetime.now(UTC) - timedelta(days=100)
    token, info = with_store(settings, lambda store, _: store.create("bob", Role.USER, None, timedelta(days=90)),
                             clock=lambda: past)
    verified = with_store(settings, lambda store, _: store.verify(token))
    assert verified.identity is None and verified.failure is AuthFailure.EXPIRED, verified
    code, out, _ = run(settings)
    row = next(line for line in out.splitlines() if info.token_id in line)
    assert "expired" in row and "bob" in row, row
    # the same token a day before its expiry is good
    day_before = info.expires_at - timedelta(days=1)
    assert with_store(settings, lambda store, _: store.authenticate(token), clock=lambda: day_before) is not None


async def test_verify_tells_missing_unknown_expired_and_revoked_apart(settings, arq_redis):
    now = datetime(2026, 6, 1, tzinfo=UTC)
    store = TokenStore(arq_redis, Keys.for_environment(settings.environment), clock=lambda: now)
    token, info = await store.create("carol", Role.ADMIN, "risk", timedelta(hours=1))
    never, _ = await store.create("dave", Role.USER)  # no expiry
    assert (await store.verify(token)).identity == Identity("carol", "risk", Role.ADMIN, info.token_id)
    assert (await store.verify(f"  {never}\n")).identity is not None  # surrounding blanks of a pasted token
    secret = token.split("_", 2)[2]
    forged = token[:-1] + ("A" if token[-1] != "A" else "B")  # right id, wrong secret
    for given, failure in [(None, AuthFailure.MISSING), ("", AuthFailure.MISSING), (" ", AuthFailure.MISSING),
                           ("nonsense", AuthFailure.UNKNOWN), (secret, AuthFailure.UNKNOWN),
                           (forged, AuthFailure.UNKNOWN), (f"jq_000000000000_{secret}", AuthFailure.UNKNOWN)]:
        verified = await store.verify(given)
        assert verified.identity is None and verified.failure is failure, (given, verified)
        assert await store.authenticate(given) is None
    later = TokenStore(arq_redis, store.keys, clock=lambda: now + timedelta(hours=2))
    assert (await later.verify(token)).failure is AuthFailure.EXPIRED
    assert (await later.verify(never)).identity is not None
    await store.revoke(f"jq_{info.token_id}")  # the prefix `list` shows works as the id too
    assert (await later.verify(token)).failure is AuthFailure.REVOKED  # revoked wins over expired
    first = (await store.get(info.token_id)).revoked_at
    assert (await store.revoke(info.token_id)).revoked_at == first  # revoking again changes nothing
    assert sorted(t.owner for t in await store.tokens()) == ["carol", "dave"]  # created in the same millisecond
    with pytest.raises(TokenError, match="expires must be in the future"):
        await store.create("erin", Role.USER, expires_in=timedelta(0))
    raw = await arq_redis.hgetall(store.keys.token(info.token_id))
    assert set(raw) == {f.value.encode() for f in TokenField}  # with a team, an expiry, used and revoked: every field
