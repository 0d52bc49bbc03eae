"""Start-up checks for long-running processes: fail at once, naming the setting and the fix.

A manager or consumer that starts with a spill directory it cannot write, or a Redis it cannot
reach, would otherwise fail its first job, or retry forever, far from the cause. These checks run
before the process serves anything; each failure names the variable to change.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from redis.exceptions import AuthenticationError, ResponseError

from jobqueue.errors import JobQueueError
from jobqueue.outage import REDIS_UNREACHABLE, redacted
from jobqueue.settings import Settings


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
    from jobqueue.client import connect_redis

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
