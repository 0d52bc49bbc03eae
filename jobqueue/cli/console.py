"""The CLI's one output wrapper: rich console, clean one-line errors with exit codes.

`settings_or_exit`, `fail_cleanly` and `err_console` live in `jobqueue.preflight` (the consumer process
reports its start-up failures the same way without going through the CLI); they are re-exported here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.console import Console

from jobqueue.preflight import err_console as err_console
from jobqueue.preflight import fail_cleanly as fail_cleanly
from jobqueue.preflight import settings_or_exit as settings_or_exit

if TYPE_CHECKING:
    from jobqueue.client import AsyncJobQueueClient

T = TypeVar("T")
console = Console()

# the shared options of every command that talks to the service: a remote API with a token (docs/sdk.md)
ApiUrl = Annotated[str | None, typer.Option(
    "--api-url", help="The jobqueue API to talk to (default: JOBQUEUE_API_URL; else JOBQUEUE_REDIS_URL, direct; "
    "else a running `jobqueue up`).")]
Token = Annotated[str | None, typer.Option(
    "--token", help="API token for --api-url (default: JOBQUEUE_API_TOKEN, which keeps it out of the process "
    "list; a local `jobqueue up`'s own token otherwise).", show_default=False)]


def with_client(fn: Callable[[AsyncJobQueueClient], Awaitable[T]], api_url: str | None = None,
                token: str | None = None) -> T:
    """Run `fn` with an SDK client for the configured environment (over HTTP with `api_url`, or as the settings
    say: `jobqueue.connect`); failures become clean errors."""
    from jobqueue.client import AsyncJobQueueClient  # the SDK loads pyarrow: only for commands that use it

    settings = settings_or_exit()

    async def go() -> T:
        async with AsyncJobQueueClient(settings, api_url=api_url, token=token) as client:
            return await fn(client)

    with fail_cleanly():
        return asyncio.run(go())
