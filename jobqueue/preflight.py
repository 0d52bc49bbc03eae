"""Start-up checks for long-running processes: fail at once, naming the setting and the fix.

A manager or consumer that starts with a spill directory it cannot write, or a Redis it cannot
reach, would otherwise fail its first job, or retry forever, far from the cause. These checks run
before the process serves anything; each failure names the variable to change.
`settings_or_exit` and `fail_cleanly` report such failures as one line on stderr and an exit code
(2: a setting; 1: anything else known), the same from the CLI and from `python -m consumer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import typer
from redis.exceptions import AuthenticationError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from rich.console import Console
from rich.markup import escape

from jobqueue.errors import ConfigError, JobQueueError, SettingsError
from jobqueue.outage import REDIS_UNREACHABLE, redacted
from jobqueue.settings import Settings, load_settings

err_console = Console(stderr=True)


class PreflightError(JobQueueError):
    """A setting that cannot work on this machine; the message starts with the variable's name."""


def check_writable_dir(path: Path, variable: str, purpose: str) -> None:
    """`path` exists (or can be created) and a file can be written, read back and removed in it."""
    probe = path / f".jobqueue-probe-{os.getpid()}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"ok")
        if probe.read_bytes() != b"ok":
            raise OSError("a file written there did not read back")
        probe.unlink()
        os.listdir(path)
    except OSError as e:
        raise PreflightError(
            f"{variable}: {path} is not a writable directory ({e.strerror or e}); {purpose}"
        ) from None


def check_spill_dir(settings: Settings) -> None:
    check_writable_dir(settings.spill_root, "JOBQUEUE_SPILL_DIRECTORY",
                       "point it at a writable local disk (on Kubernetes, the node's NVMe)")
    if settings.table_scan_cache_bytes > 0:
        check_writable_dir(settings.scan_cache_root, "JOBQUEUE_TABLE_SCAN_CACHE_DIRECTORY",
                           "point it at a writable local disk, or set JOBQUEUE_TABLE_SCAN_CACHE_BYTES=0")


async def check_redis(settings: Settings, timeout: float = 10.0) -> None:
    """One PING within `timeout` seconds."""
    from jobqueue.redis import connect_redis

    where = redacted(settings.resolved_redis_url())
    client = connect_redis(settings)
    try:
        await asyncio.wait_for(client.ping(), timeout)
    except AuthenticationError as e:
        raise PreflightError(f"JOBQUEUE_REDIS_PASSWORD: Redis at {where} refused the credentials ({e}); "
                             "set the password (or ACL user in JOBQUEUE_REDIS_URL) it expects") from None
    except ResponseError as e:
        raise PreflightError(f"JOBQUEUE_REDIS_URL: Redis at {where} refused PING ({e})") from None
    except REDIS_UNREACHABLE + (TimeoutError, OSError) as e:
        raise PreflightError(f"JOBQUEUE_REDIS_URL: cannot reach Redis at {where} ({e or 'timed out'}); start it "
                             "(`jobqueue up` on one machine) or point JOBQUEUE_REDIS_URL at it") from None
    finally:
        await client.aclose()


def check_config_files(settings: Settings, groups: bool = True, schedules: bool = True) -> None:
    """The registry, and for a manager the resource groups and schedules files, load (a broken group or
    schedule alone does not stop a manager: it is reported and the others run)."""
    from jobqueue.groups import load_groups_config
    from jobqueue.registry import load_registry
    from jobqueue.schedules import load_schedules

    variable = "JOBQUEUE_REGISTRY_PATH"
    try:
        registry = load_registry(settings.registry_path)
        if groups or schedules:
            variable = "JOBQUEUE_RESOURCE_GROUPS_PATH"
            config = load_groups_config(settings.resource_groups_path)
        if schedules:
            variable = "JOBQUEUE_SCHEDULES_PATH"
            load_schedules(settings.schedules_path, registry, config.groups)
    except ConfigError as e:
        raise PreflightError(f"{variable}: {e}; fix the file, or point {variable} at another") from None
    except OSError as e:  # the file went away, or cannot be read
        raise PreflightError(f"{variable}: cannot read it ({e.strerror or e}: {e.filename})") from None


@contextlib.contextmanager
def single_instance(home: Path) -> Iterator[None]:
    """Hold `<home>/up.pid` (an exclusive `flock`, with our pid in it) for the block: one `jobqueue up` per home.

    The lock goes with the process, even a killed one, so a stale file never blocks a new start.
    """
    home.mkdir(parents=True, exist_ok=True)
    with open(home / "up.pid", "a+") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            pid = f.read().strip() or "?"
            raise PreflightError(
                f"JOBQUEUE_HOME: `jobqueue up` is already running for {home} (pid {pid}); use it, stop it "
                f"(Ctrl-C in its terminal, or `kill {pid}`), or set JOBQUEUE_HOME to another directory"
            ) from None
        f.truncate(0)
        f.write(f"{os.getpid()}\n")
        f.flush()
        try:
            yield
        finally:
            f.truncate(0)  # before the lock goes: a newer instance's pid is never erased


def check_port_free(host: str, port: int, variable: str) -> None:
    """`port` can be bound on `host` now (as asyncio binds it: SO_REUSEADDR); 0 and -1 always pass."""
    if port <= 0:
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as e:
            if e.errno != errno.EADDRINUSE:
                raise
            raise port_in_use(variable, host, port) from None


def port_in_use(variable: str, host: str, port: int) -> PreflightError:
    return PreflightError(f"{variable}: port {port} on {host} is in use (another `jobqueue up`, or another "
                          f"program); set {variable} to a free port (0: any free port)")


def _error(message: str, code: int) -> typer.Exit:
    message = " ".join(message.split())  # one line (a YAML error spans several); the terminal wraps it
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
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
    except (PreflightError, SettingsError) as e:  # a setting that cannot work here (or none is set): exit 2
        raise _error(str(e), 2) from None
    except JobQueueError as e:
        raise _error(str(e), 1) from None
    except RedisConnectionError as e:
        raise _error(f"cannot reach Redis ({e}); is `jobqueue up` running or JOBQUEUE_REDIS_URL set?", 1) from None
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
