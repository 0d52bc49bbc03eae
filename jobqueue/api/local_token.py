"""The local admin token of `jobqueue up`: one machine, one user, no token to copy.

`up` creates an admin token for the OS user (and JOBQUEUE_TEAM), writes it to `<home>/api.token` with mode 0600
(only this OS user reads it, as with `~/.ssh`), and revokes it and removes the file when it stops. A client with
no JOBQUEUE_API_URL and no JOBQUEUE_REDIS_URL finds `<home>/api.url` and this token together
(`jobqueue.connect`), so the README example and `make demo` stay one command. Anyone else on the host gets 401.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator

from jobqueue.attribution import default_owner
from jobqueue.auth.identity import Role
from jobqueue.auth.tokens import TokenStore
from jobqueue.keys import Keys
from jobqueue.redis import connect_redis
from jobqueue.settings import Settings


async def _store_call(settings: Settings, revoke: str | None = None) -> tuple[str, str]:
    redis = connect_redis(settings)
    try:
        store = TokenStore(redis, Keys.for_environment(settings.environment))
        if revoke is not None:
            await store.revoke(revoke)
            return "", revoke
        token, info = await store.create(default_owner(), Role.ADMIN, settings.team or None)
        return token, info.token_id
    finally:
        await redis.aclose()


@contextlib.contextmanager
def local_admin_token(settings: Settings) -> Iterator[str]:
    """While the block runs: an admin token in `settings.api_token_file` (0600). Yields the file's path."""
    token, token_id = asyncio.run(_store_call(settings))
    path = settings.api_token_file
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # a stale file of a killed `up` (its mode might be wider)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    try:
        yield str(path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            if path.read_text().strip() == token:  # never remove another instance's token
                path.unlink()
        with contextlib.suppress(Exception):  # Redis may be gone already (the embedded one stops with `up`)
            asyncio.run(_store_call(settings, revoke=token_id))
