"""`jobqueue tokens`: create, list and revoke API tokens (for the API server's bearer authentication).

Talks to Redis directly, as the operator of the deployment does; the token is printed once, at creation, and
Redis keeps only its SHA-256 (`jobqueue.auth.tokens`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.table import Table

from jobqueue.auth.identity import Role
from jobqueue.cli.console import console, err_console, fail_cleanly, settings_or_exit
from jobqueue.errors import JobQueueError

if TYPE_CHECKING:
    from jobqueue.auth.tokens import TokenInfo, TokenStore

T = TypeVar("T")
app = typer.Typer(help="API tokens: create (printed once), list, revoke.", no_args_is_help=False)


def _with_tokens(fn: Callable[[TokenStore], Awaitable[T]]) -> T:
    from jobqueue.auth.tokens import TokenStore
    from jobqueue.keys import Keys
    from jobqueue.redis import connect_redis

    settings = settings_or_exit()

    async def go() -> T:
        redis = connect_redis(settings)
        try:
            return await fn(TokenStore(redis, Keys.for_environment(settings.environment)))
        finally:
            await redis.aclose()

    with fail_cleanly():
        return asyncio.run(go())


def _expiry(text: str | None) -> timedelta | None:
    from jobqueue.registry import parse_window

    if text is None or text.lower() in ("never", "none"):
        return None
    try:
        return timedelta(seconds=parse_window(text))
    except ValueError as e:
        raise JobQueueError(f"--expires: {e}") from None


@app.command("create")
def create(
    owner: Annotated[str, typer.Option(help="Whose token: the owner recorded on the jobs it submits.")],
    role: Annotated[Role, typer.Option(help="user: own jobs; operator: every job and schedules; admin: also "
                                       "tokens and the registry.")] = Role.USER,
    team: Annotated[str | None, typer.Option(help="The team recorded on the jobs it submits.")] = None,
    expires: Annotated[str | None, typer.Option(help="Lifetime, e.g. 90d, 12h, 2w; `never` for none.")] = "90d",
) -> None:
    """Create a token and print it once: it cannot be shown again (only its hash is stored)."""
    with fail_cleanly():
        lifetime = _expiry(expires)
    token, info = _with_tokens(lambda store: store.create(owner, role, team, lifetime))
    until = info.expires_at.isoformat(timespec="seconds") if info.expires_at else "never"
    err_console.print(f"token {info.token_id} for {owner} (role {role.value}, team {team or '-'}, expires {until}); "
                      "store it now, it is not shown again:", highlight=False)
    print(token)  # alone on stdout, so that `TOKEN=$(jobqueue tokens create ...)` works


@app.callback(invoke_without_command=True)
def list_tokens(ctx: typer.Context) -> None:
    """Every token (never the token itself): id, owner, team, role, created, expires, last used, state."""
    if ctx.invoked_subcommand is not None:
        return
    found: list[TokenInfo] = _with_tokens(lambda store: store.tokens())
    now = datetime.now(UTC)
    table = Table("id", "prefix", "owner", "team", "role", "created", "expires", "last used", "state", title="tokens")
    for t in found:
        table.add_row(t.token_id, t.prefix, t.owner, t.team or "-", t.role.value, _when(t.created_at),
                      _when(t.expires_at, "never"), _when(t.last_used_at), t.state(now))
    console.print(table)


@app.command("revoke")
def revoke(token_id: Annotated[str, typer.Argument(help="The token's id (`jobqueue tokens list`).")]) -> None:
    """Revoke a token: the API refuses it from now on."""
    info = _with_tokens(lambda store: store.revoke(token_id))
    console.print(f"token {info.token_id} of {info.owner} is revoked", highlight=False)


def _when(value: datetime | None, none: str = "-") -> str:
    return value.isoformat(timespec="seconds") if value else none
