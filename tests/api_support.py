"""Helpers of the API tests: tokens of each role (and expired or revoked ones), request bodies, a served API."""

from __future__ import annotations

import io
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from jobqueue.auth.identity import Role
from jobqueue.auth.tokens import TokenStore
from jobqueue.keys import Keys
from jobqueue.redis import connect_redis
from jobqueue.settings import Settings

ARROW = {"content-type": "application/vnd.apache.arrow.stream"}
PARQUET = {"content-type": "application/vnd.apache.parquet"}


async def make_token(settings: Settings, owner: str, role: Role = Role.USER, team: str | None = None, *,
                     expired: bool = False, revoked: bool = False) -> str:
    redis = connect_redis(settings)
    try:
        keys = Keys.for_environment(settings.environment)
        if expired:  # made two minutes ago, valid for one
            past = datetime.now(UTC) - timedelta(minutes=2)
            token, _ = await TokenStore(redis, keys, clock=lambda: past).create(owner, role, team, timedelta(minutes=1))
        else:
            token, info = await TokenStore(redis, keys).create(owner, role, team)
            if revoked:
                await TokenStore(redis, keys).revoke(info.token_id)
        return token
    finally:
        await redis.aclose()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def arrow_body(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    with ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def parquet_body(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


async def alice_token(redis_url: str, environment: str) -> str:
    """A `user` token of alice (team risk) in `environment`, for a process started with only a Redis URL."""
    return await make_token(Settings(redis_url=redis_url, environment=environment), "alice", Role.USER, "risk")


def api_url_of(up: subprocess.Popen[str], home: Path, timeout: float = 60.0) -> str:
    """The URL a starting `jobqueue up` (its output piped) writes to `<home>/api.url`; its output if it exits."""
    deadline = time.monotonic() + timeout
    while not (home / "api.url").is_file():
        assert up.poll() is None, up.stdout.read() if up.stdout else ""
        assert time.monotonic() < deadline, "`jobqueue up` wrote no api.url"
        time.sleep(0.1)
    return (home / "api.url").read_text().strip()


def http_settings(settings: Settings, url: str, token: str) -> Settings:
    """A client's settings with the API only: no Redis URL, no registry file, a home with nothing in it."""
    return Settings(api_url=url, api_token=token, environment=settings.environment,
                    home=settings.home.parent / "client-home")
