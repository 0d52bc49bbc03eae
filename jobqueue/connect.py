"""Which server a client talks to, and how: `resolve_target(settings, api_url, token, redis_given)`.

In this order, the first that applies:

1. An API URL given to the client (`api_url=`) or set (JOBQUEUE_API_URL): HTTP to it, with the token given
   (`token=`), else JOBQUEUE_API_TOKEN, else, when it is the API of the local `jobqueue up`, `<home>/api.token`.
2. A Redis connection given to the client, or JOBQUEUE_REDIS_URL set: direct ("trusted": Redis and storage).
3. A running `jobqueue up` under JOBQUEUE_HOME that recorded its API (`<home>/api.url`): HTTP to it, with
   JOBQUEUE_API_TOKEN or the local admin token `up` wrote to `<home>/api.token` (mode 0600: only this OS user).
4. A running `jobqueue up` that recorded only its Redis (`<home>/redis.url`): direct, as before the API existed.
5. None: `NoServerError`. Never a guess at a default address: on a shared host that is somebody else's server.

An explicit setting always wins over what a local `jobqueue up` recorded. Pure but for reading those home files.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import SecretStr

from jobqueue.errors import NoServerError
from jobqueue.settings import Settings


@dataclass(frozen=True)
class HttpTarget:
    url: str
    token: SecretStr | None
    local: bool  # the API of the `jobqueue up` under this home (its embedded Redis goes with it)

    def __repr__(self) -> str:  # never the token
        return f"HttpTarget(url={self.url!r}, local={self.local})"


@dataclass(frozen=True)
class DirectTarget:
    pass


def local_token(settings: Settings) -> SecretStr | None:
    try:
        text = settings.api_token_file.read_text().strip()
    except (FileNotFoundError, PermissionError):
        return None
    return SecretStr(text) if text else None


def resolve_target(settings: Settings, api_url: str | None = None, token: str | SecretStr | None = None,
                   redis_given: bool = False) -> HttpTarget | DirectTarget:
    given = SecretStr(token) if isinstance(token, str) else token
    recorded = settings.recorded_api_url()
    url = api_url or settings.api_url
    if url:
        url = url.rstrip("/")
        local = recorded is not None and url == recorded.rstrip("/")
        return HttpTarget(url, given or settings.api_token or (local_token(settings) if local else None), local)
    if redis_given or settings.redis_url:
        return DirectTarget()
    if recorded is not None:
        return HttpTarget(recorded.rstrip("/"), given or settings.api_token or local_token(settings),
                          settings.embedded_url() is not None)
    if settings.embedded_url() is not None:
        return DirectTarget()
    raise NoServerError(
        "no jobqueue server: set JOBQUEUE_API_URL (and JOBQUEUE_API_TOKEN) to your jobqueue API, or start one on "
        f"this machine with `jobqueue up` (it records its API in {settings.api_url_file}); code inside the cluster "
        "may set JOBQUEUE_REDIS_URL instead (direct mode)",
        ("JOBQUEUE_API_URL", "JOBQUEUE_REDIS_URL"),
    )
