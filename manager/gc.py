"""Retention: the manager's garbage collector removes what no job needs any more.

The final transitions remove a job's staged input (and the result folder of a job that did not
succeed) as they happen; this is the level-triggered safety net behind them, and what enforces the
result TTL. Each run looks at what is there, on local disk or an object store alike, and removes:

    staged_input    <staging>/<job>/ whose record is final, or gone and older than the grace
                    (a submission stages its input before it writes the record)
    staged_upload   <staging>/_uploads/<owner>/<ref>/ (a presigned PUT's object) whose upload reference is gone
                    (it expired unused, or was submitted) and that is older than the grace
    result          <results>/<job>/ of a job that finished JOBQUEUE_RESULT_TTL_SECONDS ago: the record's
                    `finished_at`, else (the record expired, or an in-process run never had one) the files' age
    result_folder   <results>/<job>/ of a job that failed, was cancelled or expired, once the grace is over:
                    an empty folder, or a killed attempt's temporary file
    jobs_index      `jobs` entries whose record has expired
    deadlines       `deadlines` entries whose record has expired
    schedule_runs   `schedule-runs:<name>` entries whose record has expired
    listing_indexes listing-index entries whose record has expired (`manager.listing_upkeep`)
    listing_backfill jobs not yet in the listing indexes, indexed (`manager.listing_upkeep`), and the shards of a
                    sharded query not in its per-parent index or the index of every shard; the whole of `jobs` is
                    checked once when the garbage collector starts

Each run examines at most `JOBQUEUE_GC_BATCH_SIZE` items of each kind and the next run goes on where
it stopped, so one run costs the same however much has piled up. Only the leader runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import cast

from redis.asyncio import Redis

from jobqueue.jobstore import JobStore
from jobqueue.keys import SCHEDULE_ERRORS_FIELD, JobField, Keys
from jobqueue.logs import get_logger
from jobqueue.models import JobStatus
from jobqueue.outage import REDIS_UNREACHABLE
from jobqueue.settings import Settings
from jobqueue.storage import Storage
from jobqueue.upload_store import UploadStore, delete_upload_folder, staged_upload_folders
from manager.listing_upkeep import ListingUpkeep
from manager.metrics import ManagerMetrics
from manager.periodic import every_while_leading

log = get_logger("jobqueue.manager.gc")
KINDS = ("staged_input", "staged_upload", "result", "result_folder", "jobs_index", "deadlines", "schedule_runs",
         "listing_indexes", "listing_backfill")
FINAL = {s.value for s in JobStatus if s.is_final}
Record = tuple[str | None, float | None]  # (status, finished_at epoch seconds); (None, None) when gone


@dataclass
class GcReport:
    dry_run: bool
    removed: dict[str, list[str]] = field(default_factory=lambda: {kind: [] for kind in KINDS})
    examined: dict[str, int] = field(default_factory=lambda: {kind: 0 for kind in KINDS})
    seconds: float = 0.0

    def counts(self) -> dict[str, int]:
        return {kind: len(ids) for kind, ids in self.removed.items()}


class GarbageCollector:
    def __init__(self, redis: Redis, settings: Settings, storage: Storage | None = None,
                 metrics: ManagerMetrics | None = None, clock: Callable[[], float] = time.time,
                 batch: int | None = None) -> None:
        self.redis = redis
        self.settings = settings
        self.keys = Keys.for_environment(settings.environment)
        self.store = JobStore(redis, self.keys, settings.job_ttl_seconds)
        self.storage = storage or Storage(settings)
        self.metrics = metrics
        self.clock = clock
        self.batch = batch or settings.gc_batch_size
        self.listing = ListingUpkeep(redis, self.keys, self.store, self.batch)
        self._backfilled = False  # the whole of `jobs` checked once (the first run this manager leads)
        # where the next run goes on: a job id (folders) or a rank (zsets)
        self._cursors: dict[str, str | int | None] = {}

    async def run(self, stop: asyncio.Event, leader: Callable[[], bool] = lambda: True) -> None:
        """One run every `JOBQUEUE_GC_INTERVAL_SECONDS` while this manager leads, until `stop`."""
        await every_while_leading(self.settings.gc_interval_seconds, stop, leader, self.run_once,
                                  "the garbage collector", log, first=self._backfill_once)

    async def _backfill_once(self) -> None:
        """Jobs from before the listing indexes: indexed at once (the whole of `jobs`), not a run later."""
        if not self._backfilled:
            with contextlib.suppress(*REDIS_UNREACHABLE):
                await self.listing.backfill(whole=True)
                self._backfilled = True

    async def run_once(self, dry_run: bool = False) -> GcReport:
        started = time.perf_counter()
        report = GcReport(dry_run)
        now = self.clock()
        await self._staging(report, now)
        await self._uploads(report, now)
        await self._results(report, now)
        await self._index(report, "jobs_index", [self.keys.jobs_index])
        await self._index(report, "deadlines", [self.keys.deadlines])
        names = sorted(n.decode() for n in await cast(Awaitable[list[bytes]], self.redis.hkeys(self.keys.schedules)))
        await self._index(report, "schedule_runs",
                          [self.keys.schedule_runs(n) for n in names if n != SCHEDULE_ERRORS_FIELD])
        for kind, upkeep in (("listing_indexes", self.listing.clean(dry_run)), ("listing_backfill",
                             self.listing.backfill(dry_run, whole=not self._backfilled))):
            done = await upkeep
            report.examined[kind] += done.examined
            report.removed[kind] += done.changed or []
        self._backfilled = self._backfilled or not dry_run
        report.seconds = time.perf_counter() - started
        if self.metrics is not None and not dry_run:
            for kind, count in report.counts().items():
                if count:
                    self.metrics.gc_removed.labels(kind).inc(count)
        log.info("garbage collected" if not dry_run else "garbage collection (dry run)", removed=report.counts(),
                 examined=report.examined, seconds=round(report.seconds, 3))
        return report

    # --- folders -------------------------------------------------------------------------------
    async def _staging(self, report: GcReport, now: float) -> None:
        root, grace = self.settings.staging, self.settings.gc_grace_seconds
        ids = await self._next_folders("staged_input", root, report)
        doomed = []
        for job_id, (status, _) in zip(ids, await self._records(ids), strict=True):
            if status in FINAL or (status is None and await self._older(root, job_id, now, grace)):
                doomed.append(job_id)
        await self._remove_folders(report, "staged_input", root, doomed)

    async def _uploads(self, report: GcReport, now: float) -> None:
        folders = await asyncio.to_thread(staged_upload_folders, self.storage)
        after = self._cursors.get("staged_upload")
        batch = [f for f in folders if after is None or f[0] > str(after)][: self.batch]
        if not report.dry_run:
            self._cursors["staged_upload"] = batch[-1][0] if len(batch) == self.batch else None
        report.examined["staged_upload"] += len(batch)
        uploads = UploadStore(self.redis, self.keys, self.settings.staging, self.settings.environment, 1)
        live = await uploads.exists([ref for ref, _, _ in batch])
        grace = self.settings.gc_grace_seconds
        doomed = [(ref, folder) for (ref, folder, modified), alive in zip(batch, live, strict=True)
                  if not alive and now - modified >= grace]
        report.removed["staged_upload"] += [ref for ref, _ in doomed]
        if doomed and not report.dry_run:
            await asyncio.to_thread(self._delete_uploads, [folder for _, folder in doomed])

    async def _results(self, report: GcReport, now: float) -> None:
        root, ttl, grace = self.settings.results, self.settings.result_ttl, self.settings.gc_grace_seconds
        ids = await self._next_folders("result", root, report)
        expired, folders = [], []
        for job_id, (status, finished) in zip(ids, await self._records(ids), strict=True):
            if status is None:  # the record expired, or never existed (an in-process run)
                if await self._older(root, job_id, now, ttl):
                    expired.append(job_id)
            elif status == JobStatus.SUCCEEDED.value:
                if finished is not None and now - finished >= ttl:
                    expired.append(job_id)
            elif status in FINAL and (finished is None or now - finished >= grace):
                folders.append(job_id)
        await self._remove_folders(report, "result", root, expired)
        await self._remove_folders(report, "result_folder", root, folders)

    async def _next_folders(self, kind: str, root: str, report: GcReport) -> list[str]:
        """The next batch of job folders under `root` after the cursor; from the start again at the end."""
        ids = await asyncio.to_thread(self.storage.job_ids, root)
        after = self._cursors.get(kind)
        batch = [i for i in ids if after is None or i > str(after)][: self.batch]
        if not report.dry_run:
            self._cursors[kind] = batch[-1] if len(batch) == self.batch else None
        report.examined[kind] += len(batch)
        return batch

    async def _older(self, root: str, job_id: str, now: float, seconds: float) -> bool:
        modified = await asyncio.to_thread(self.storage.job_dir_modified, root, job_id)
        return modified is not None and now - modified >= seconds

    async def _remove_folders(self, report: GcReport, kind: str, root: str, ids: list[str]) -> None:
        report.removed[kind] += ids
        if ids and not report.dry_run:
            await asyncio.to_thread(self._delete_dirs, root, ids)

    def _delete_uploads(self, folders: list[str]) -> None:
        for folder in folders:
            delete_upload_folder(self.storage, folder)

    def _delete_dirs(self, root: str, ids: list[str]) -> None:
        for job_id in ids:
            self.storage.delete_job_dir(root, job_id)

    async def _records(self, ids: Sequence[str]) -> list[Record]:
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hmget(self.keys.job(job_id), [JobField.STATUS, JobField.FINISHED_AT])
            replies = await pipe.execute()
        return [(status.decode() if status else None, _epoch(finished)) for status, finished in replies]

    # --- Redis indexes -------------------------------------------------------------------------
    async def _index(self, report: GcReport, kind: str, keys: list[str]) -> None:
        """Entries of the zsets `keys` (job id members) whose record is gone, `batch` entries over all of them."""
        budget = self.batch
        for key in keys:
            if budget <= 0:
                break
            offset = int(self._cursors.get(key) or 0)
            ids = [m.decode() for m in await self.redis.zrange(key, offset, offset + budget - 1)]
            async with self.redis.pipeline(transaction=False) as pipe:
                for job_id in ids:
                    pipe.exists(self.keys.job(job_id))
                exists = await pipe.execute() if ids else []
            gone = [job_id for job_id, found in zip(ids, exists, strict=True) if not found]
            report.examined[kind] += len(ids)
            report.removed[kind] += gone
            if not report.dry_run:
                await self.store.prune_index(key, gone)
                self._cursors[key] = offset + len(ids) - len(gone) if len(ids) == budget else 0
            budget -= len(ids)


def _epoch(raw: bytes | None) -> float | None:
    if not raw:
        return None
    value = json.loads(raw)
    return datetime.fromisoformat(value).timestamp() if isinstance(value, str) else None
