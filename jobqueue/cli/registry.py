"""`jobqueue registry`: apply a registry file as the new version, show a version, list the history."""

from __future__ import annotations

import getpass
import json
import socket
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.table import Table

from jobqueue.api.wire import RegistryVersionBody
from jobqueue.cli.console import ApiUrl, Token, console, fail_cleanly, with_client
from jobqueue.registry import load_registry
from jobqueue.registry_versions import RegistryVersion, parse_version_ref

T = TypeVar("T")
app = typer.Typer(
    help="The feature registry served from Redis: every apply is a new immutable version; each job runs on the "
    "version it was planned against, whatever is applied later, and consumers need no registry file. `jobqueue up` "
    "applies JOBQUEUE_REGISTRY_PATH at start; a client with JOBQUEUE_REGISTRY_PATH set refuses to submit while "
    "another version is current (docs/architecture.md, 'Registry versions').",
    no_args_is_help=True,
)


def _version(body: RegistryVersionBody) -> RegistryVersion:
    return RegistryVersion(number=body.number, hash=body.hash, applied_at=body.applied_at, applied_by=body.applied_by,
                           origin=body.origin, document=body.document or {"namespaces": {}})


@app.command("apply")
def apply(
    path: Annotated[Path, typer.Argument(help="The registry YAML file; relative local paths in it are made "
                                               "absolute against its directory, here and now.")],
    api_url: ApiUrl = None,
    token: Token = None,
) -> None:
    """Validate a registry file and store it as the new current version (nothing is stored if it does not
    validate). Content equal to the current version's stores nothing and prints the current version. Over the
    API: an admin token, and the token's owner is recorded as who applied it."""
    if not path.is_file():
        raise typer.BadParameter(f"{path}: no such file", param_hint="PATH")
    with fail_cleanly():
        registry = load_registry(path)  # a ConfigError names the file, the namespace and the field
    applied = with_client(lambda c: c.apply_registry(registry, applied_by=f"{_user()} on {socket.gethostname()}"),
                          api_url, token)
    v = applied.version
    what = "applied as version" if applied.created else "unchanged: already the current version"
    console.print(f"{path}: {what} {v.version} ({v.namespaces} namespaces, {v.features} features)",
                  highlight=False)


@app.command("show")
def show(
    version: Annotated[str | None, typer.Argument(help="A version number (3) or id (3-9f8e7d6c5b4a); default: the "
                                                       "current version.")] = None,
    api_url: ApiUrl = None,
    token: Token = None,
) -> None:
    """A version as a registry file (YAML), which `jobqueue registry apply` takes back."""
    if version is not None:
        try:
            parse_version_ref(version)
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="VERSION") from None
    found = with_client(lambda c: c.registry_version(version) if version is not None else c.registry_current(),
                        api_url, token)
    typer.echo(_version(found).to_yaml(), nl=False)


@app.command("history")
def history(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
            api_url: ApiUrl = None, token: Token = None) -> None:
    """Every version, oldest first: when and by whom it was applied, its hash and size; `*` marks the current."""
    listed = with_client(lambda c: c.registry_history(), api_url, token)
    versions, current = listed.versions, listed.current
    if as_json:
        typer.echo(json.dumps([{
            "version": v.version, "number": v.number, "hash": v.hash, "applied_at": v.applied_at.isoformat(),
            "applied_by": v.applied_by, "origin": v.origin, "namespaces": v.namespaces,
            "features": v.features, "current": v.version == current,
        } for v in versions], indent=2))
        return
    table = Table("", "version", "applied at", "applied by", "hash", "namespaces", "features", "from",
                  title="registry versions")
    for v in versions:
        table.add_row("*" if v.version == current else "", str(v.number), v.applied_at.isoformat(timespec="seconds"),
                      v.applied_by or "-", v.hash, str(v.namespaces), str(v.features), v.origin)
    console.print(table)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (containers)
        return "unknown user"
