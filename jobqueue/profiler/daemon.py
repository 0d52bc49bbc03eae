"""The profiler's loop: capture one dump, keep the newest few, upload what is not yet uploaded.

    while not stopped:
        no jobqueue process here   -> wait (nothing to sample, nothing uploaded)
        free space below the floor -> warn once, skip the capture, wait
        otherwise                  -> capture `<UTC ts>-<kind>.gz` for dump_duration_seconds
        retain: delete the oldest dumps beyond max_dumps_retained
        upload every dump without its `.uploaded` marker, oldest first, retrying with backoff;
        what still fails is retried after the next capture

Time, sleeping, free space and process discovery are injected, so tests run it on a fake clock.
"""

from __future__ import annotations

import asyncio
import errno
import shutil
import socket
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from jobqueue.logs import get_logger
from jobqueue.profiler.collectors import CaptureError, Collector
from jobqueue.profiler.dumps import UPLOADED_SUFFIX, dump_name, object_key, to_prune
from jobqueue.profiler.targets import Target, find_targets
from jobqueue.settings import Settings

if TYPE_CHECKING:
    from jobqueue.storage import Storage

log = get_logger("jobqueue.profiler")
UPLOAD_ATTEMPTS = 4  # per dump per cycle: backoff 1, 2, 4 s between them
IDLE_SECONDS = 10.0  # how often to look again for jobqueue processes when there are none


class Uploader(Protocol):
    async def upload(self, path: Path, key: str) -> None: ...


class ObjectStoreUploader:
    """Uploads to `s3://bucket` (endpoint and credentials from `JOBQUEUE_S3_*`) or `gs://bucket`."""

    def __init__(self, settings: Settings, export_to: str) -> None:
        self.settings = settings
        self.export_to = export_to.rstrip("/")

    @cached_property
    def storage(self) -> Storage:
        from jobqueue.storage import Storage  # pyarrow: loaded at the first upload, not by an idle daemon

        return Storage(self.settings)

    def uri(self, key: str) -> str:
        return f"{self.export_to}/{key}"

    def _put(self, path: Path, key: str) -> None:
        fs, target = self.storage.resolve(self.uri(key))
        with path.open("rb") as src, fs.open_output_stream(target, compression=None) as dst:  # whole on close; as is
            shutil.copyfileobj(src, dst, 4 << 20)

    async def upload(self, path: Path, key: str) -> None:
        await asyncio.to_thread(self._put, path, key)


class ProfilerDaemon:
    def __init__(
        self,
        settings: Settings,
        collector: Collector,
        uploader: Uploader | None,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        free_bytes: Callable[[Path], int] = lambda p: shutil.disk_usage(p).free,
        targets: Callable[[], list[Target]] = find_targets,
    ) -> None:
        self.settings, self.collector, self.uploader = settings, collector, uploader
        self.now, self.sleep, self.free_bytes, self.targets = now, sleep, free_bytes, targets
        self.root = settings.profiler_root
        self.node = settings.node_name or socket.gethostname()
        self.disk_full = False
        self.idle = False

    async def run(self, stop: asyncio.Event) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        log.info("profiler started", collector=self.collector.name, node=self.node, directory=str(self.root),
                 export_to=self.settings.profiler_export_to, hz=self.settings.profiler_perf_polling_frequency_hz,
                 call_graph=self.settings.profiler_call_graph,
                 dump_duration_seconds=self.settings.profiler_dump_duration_seconds)
        while not stop.is_set():
            if await self.cycle() != "captured":  # a capture took its own time; otherwise wait (or stop)
                waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self.sleep(self.pause()))]
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                for w in waits:
                    w.cancel()

    def pause(self) -> float:
        return IDLE_SECONDS if self.idle else float(self.settings.profiler_dump_duration_seconds)

    async def cycle(self) -> str:
        """One step: `captured`, `idle` (no jobqueue process), `disk_full` or `failed`."""
        outcome = await self.capture()
        self.retain()
        await self.upload_pending()
        return outcome

    async def capture(self) -> str:
        s = self.settings
        targets = self.targets()
        if not targets:
            if not self.idle:
                log.info("no jobqueue process on this node; waiting", node=self.node)
            self.idle = True
            return "idle"
        self.idle = False
        free = self.free_bytes(self.root)
        if free < s.profiler_min_free_bytes:
            if not self.disk_full:
                log.warning("dump directory nearly full; capturing stopped until space is back",
                            directory=str(self.root), free_bytes=free, min_free_bytes=s.profiler_min_free_bytes)
            self.disk_full = True
            return "disk_full"
        if self.disk_full:
            log.info("dump directory has space again; capturing", free_bytes=free)
            self.disk_full = False
        out = self.root / dump_name(self.now(), self.collector.kind)
        log.info("capturing", seconds=s.profiler_dump_duration_seconds, collector=self.collector.name,
                 pids=[t.pid for t in targets], roles=sorted({t.role for t in targets}))
        try:
            await self.collector.capture(targets, s.profiler_dump_duration_seconds,
                                         s.profiler_perf_polling_frequency_hz, s.profiler_call_graph, out)
        except OSError as e:
            out.unlink(missing_ok=True)
            if e.errno == errno.ENOSPC:
                log.warning("dump directory full; capture dropped", directory=str(self.root))
                self.disk_full = True
                return "disk_full"
            log.warning("capture failed", error=str(e), collector=self.collector.name)
            return "failed"
        except CaptureError as e:
            log.warning("capture failed", error=str(e), collector=self.collector.name)
            return "failed"
        log.info("captured", file=out.name, bytes=out.stat().st_size, pids=[t.pid for t in targets],
                 roles=sorted({t.role for t in targets}))
        return "captured"

    def dumps(self) -> list[str]:
        return sorted(p.name for p in self.root.glob(f"*-{self.collector.kind}.gz"))

    def _marker(self, name: str) -> Path:
        """The empty file that records that dump `name` is in the bucket."""
        return self.root / (name + UPLOADED_SUFFIX)

    def retain(self) -> None:
        for name in to_prune(self.dumps(), self.settings.profiler_max_dumps_retained):
            if not self._marker(name).exists() and self.uploader is not None:
                log.warning("dump deleted before it could be uploaded", file=name)
            (self.root / name).unlink(missing_ok=True)
            self._marker(name).unlink(missing_ok=True)

    async def upload_pending(self) -> None:
        if self.uploader is None:
            return
        for name in self.dumps():
            if self._marker(name).exists():
                continue
            key = object_key(self.settings.profiler_bucket_subdirectory, self.node, name)
            for attempt in range(1, UPLOAD_ATTEMPTS + 1):
                try:
                    await self.uploader.upload(self.root / name, key)
                except Exception as e:  # network, credentials, bucket: keep the dump, try again
                    if attempt == UPLOAD_ATTEMPTS:
                        log.warning("upload failed; retrying after the next capture", file=name, key=key,
                                    error=str(e), attempts=attempt)
                        return  # keep order: newer dumps wait for the older one
                    await self.sleep(2.0 ** (attempt - 1))
                else:
                    self._marker(name).touch()
                    log.info("uploaded", file=name, key=key)
                    break
