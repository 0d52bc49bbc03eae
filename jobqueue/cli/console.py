"""The CLI's one output wrapper: rich console, clean one-line errors with exit codes."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, TypeVar

import typer
from redis.exceptions import ConnectionError as RedisConnectionError
from rich.console import Console

from jobqueue.errors import JobQueueError, SettingsError
from jobqueue.preflight import PreflightError
from jobqueue.settings import Settings, load_settings

if TYPE_CHECKING:
    from jobqueue.client import AsyncJobQueueClient

T = TypeVar("T")
console = Console()
err_console = Console(stderr=True)


def _error(message: str, code: int) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def settings_or_exit() -> Settings:
    """Load settings or exit 2 with a message naming the bad variable."""
    try:
        return load_settings()
    except SettingsError as e:  # an unknown or invalid variable; the message never holds a secret
        raise _error(str(e), 2) from None


@contextlib.contextmanager
def fail_cleanly() -> Iterator[None]:
    """Known failures become one line on stderr and an exit code; bugs keep their traceback."""
    try:
        yield
    except PreflightError as e:  # a setting that cannot work here: same exit code as an invalid one
        raise _error(str(e), 2) from None
    except JobQueueError as e:
        raise _error(str(e), 1) from None
    except RedisConnectionError as e:
        raise _error(f"cannot reach Redis ({e}); is `jobqueue up` running or JOBQUEUE_REDIS_URL set?", 1) from None
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


def with_client(fn: Callable[[AsyncJobQueueClient], Awaitable[T]]) -> T:
    """Run `fn` with an SDK client for the configured environment; failures become clean errors."""
    from jobqueue.client import AsyncJobQueueClient  # the SDK loads pyarrow: only for commands that use it

    settings = settings_or_exit()

    async def go() -> T:
        async with AsyncJobQueueClient(settings) as client:
            return await fn(client)

    with fail_cleanly():
        return asyncio.run(go())
