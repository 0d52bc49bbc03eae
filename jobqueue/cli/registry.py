"""`jobqueue registry`: apply a registry file as the new version, show a version, list the history."""

from __future__ import annotations

import asyncio
import getpass
import json
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.table import Table

from jobqueue.cli.console import console, fail_cleanly, settings_or_exit
from jobqueue.errors import JobQueueError
from jobqueue.keys import Keys
from jobqueue.redis import connect_redis
from jobqueue.registry import load_registry
from jobqueue.registry_store import RegistryStore
from jobqueue.registry_versions import RegistryVersion, parse_version_ref

T = TypeVar("T")
app = typer.Typer(
    help="The feature registry served from Redis: every apply is a new immutable version; each job runs on the "
    "version it was planned against, whatever is applied later, and consumers need no registry file. `jobqueue up` "
    "applies JOBQUEUE_REGISTRY_PATH at start; a client with JOBQUEUE_REGISTRY_PATH set refuses to submit while "
    "another version is current (docs/architecture.md, 'Registry versions').",
    no_args_is_help=True,
)


def _with_store(fn: Callable[[RegistryStore], Awaitable[T]]) -> T:
    settings = settings_or_exit()

    async def go() -> T:
        redis = connect_redis(settings)
        try:
            return await fn(RegistryStore(redis, Keys.for_environment(settings.environment)))
        finally:
            await redis.aclose()

    with fail_cleanly():
        return asyncio.run(go())


@app.command("apply")
def apply(
    path: Annotated[Path, typer.Argument(help="The registry YAML file; relative local paths in it are made "
                                               "absolute against its directory, here and now.")],
) -> None:
    """Validate a registry file and store it as the new current version (nothing is stored if it does not
    validate). Content equal to the current version's stores nothing and prints the current version."""
    if not path.is_file():
        raise typer.BadParameter(f"{path}: no such file", param_hint="PATH")
    with fail_cleanly():
        registry = load_registry(path)  # a ConfigError names the file, the namespace and the field
    applied = _with_store(lambda store: store.apply(registry, applied_by=f"{_user()} on {socket.gethostname()}"))
    v = applied.version
    what = "applied as version" if applied.created else "unchanged: already the current version"
    console.print(f"{path}: {what} {v.id} ({v.namespace_count} namespaces, {v.feature_count} features)",
                  highlight=False)


@app.command("show")
def show(
    version: Annotated[str | None, typer.Argument(help="A version number (3) or id (3-9f8e7d6c5b4a); default: the "
                                                       "current version.")] = None,
) -> None:
    """A version as a registry file (YAML), which `jobqueue registry apply` takes back."""
    if version is not None:
        try:
            parse_version_ref(version)
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="VERSION") from None

    async def read(store: RegistryStore) -> RegistryVersion:
        if version is not None:
            return await store.version(version)
        current = await store.current()
        if current is None:
            raise JobQueueError("no registry version is stored yet: `jobqueue registry apply <file>` stores one "
                                "(so does `jobqueue up` with JOBQUEUE_REGISTRY_PATH)")
        return current

    typer.echo(_with_store(read).to_yaml(), nl=False)


@app.command("history")
def history(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """Every version, oldest first: when and by whom it was applied, its hash and size; `*` marks the current."""

    async def read(store: RegistryStore) -> tuple[list[RegistryVersion], str | None]:
        return await store.history(), await store.current_id()

    versions, current = _with_store(read)
    if as_json:
        typer.echo(json.dumps([{
            "version": v.id, "number": v.number, "hash": v.hash, "applied_at": v.applied_at.isoformat(),
            "applied_by": v.applied_by, "origin": v.origin, "namespaces": v.namespace_count,
            "features": v.feature_count, "current": v.id == current,
        } for v in versions], indent=2))
        return
    table = Table("", "version", "applied at", "applied by", "hash", "namespaces", "features", "from",
                  title="registry versions")
    for v in versions:
        table.add_row("*" if v.id == current else "", str(v.number), v.applied_at.isoformat(timespec="seconds"),
                      v.applied_by or "-", v.hash, str(v.namespace_count), str(v.feature_count), v.origin)
    console.print(table)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (containers)
        return "unknown user"
