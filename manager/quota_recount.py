"""The quota recount: level-triggered repair of the queued-jobs quota counts (<p>active-jobs).

A count moves by +1 in the submit script and by -1 in a job's final transition. A job whose record expires
(JOBQUEUE_JOB_TTL_SECONDS) before it ends never has a final transition, so its owner's and team's counts stay one
too high for good, and with enough of them a quota refuses submissions nobody holds. Every
JOBQUEUE_QUOTA_RECOUNT_SECONDS the leader reads the counts, counts the unfinished jobs of the live records (one scan
of the jobs index), and has `JobStore.recount_active` lower the counts that are over: that script checks the jobs
again, with every job submitted since shortly before the scan, so a submit or a final transition during the scan is
neither lost nor counted twice. A count is only ever lowered: the drift an expired record leaves is upward.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import cast

from redis.asyncio import Redis

from jobqueue.jobstore import JobStore
from jobqueue.keys import ActiveJobsField, JobField, Keys
from jobqueue.logs import get_logger
from jobqueue.models import JobStatus
from jobqueue.settings import Settings
from jobqueue.submit_store import ActiveCount
from manager.periodic import every_while_leading

log = get_logger("jobqueue.manager.quota_recount")
SCAN_BATCH = 1000
# jobs submitted this long before the scan starts are checked again by the script: a submission is indexed at its
# `submitted_at`, which it takes before staging its input, so one indexed during the scan has a score a little older
RECHECK_SECONDS = 120.0
_FIELDS = (JobField.STATUS, JobField.OWNER, JobField.TEAM, JobField.SHARD_IDS)


class QuotaRecount:
    def __init__(self, redis: Redis, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        self.redis = redis
        self.settings = settings
        self.keys = Keys.for_environment(settings.environment)
        self.store = JobStore(redis, self.keys, settings.job_ttl_seconds)
        self.clock = clock

    async def run(self, stop: asyncio.Event, leader: Callable[[], bool] = lambda: True) -> None:
        """One recount every JOBQUEUE_QUOTA_RECOUNT_SECONDS while this manager leads, until `stop`."""
        await every_while_leading(self.settings.quota_recount_seconds, stop, leader, self.run_once,
                                  "the quota recount", log)

    async def run_once(self) -> list[tuple[str, int, int]]:
        """Repair the counts once; (field, before, after) of each count lowered."""
        recheck_from_ms = int((self.clock() - RECHECK_SECONDS) * 1000)
        counted = {k.decode(): int(v) for k, v in
                   (await cast(Awaitable[dict[bytes, bytes]], self.redis.hgetall(self.keys.active_jobs))).items()}
        if not counted:
            return []
        unfinished = await self._unfinished(set(counted))
        suspects = [ActiveCount(kind, name, frozenset(unfinished.get(field, ())))
                    for field, n in sorted(counted.items())
                    for kind, name in [_parse(field)] if kind is not None and len(unfinished.get(field, ())) < n]
        lowered = await self.store.recount_active(suspects, recheck_from_ms)
        for field, before, after in lowered:
            log.warning("quota count repaired", field=field, counted=before, unfinished=after,
                        why="job records expired before their jobs ended")
        return lowered

    async def _unfinished(self, fields: set[str]) -> dict[str, set[str]]:
        """The ids of the live unfinished jobs of each of these <p>active-jobs fields."""
        found: dict[str, set[str]] = defaultdict(set)
        cursor = 0
        while True:
            cursor, page = await self.redis.zscan(self.keys.jobs_index, cursor, count=SCAN_BATCH)
            ids = [member.decode() for member, _ in page]
            async with self.redis.pipeline(transaction=False) as pipe:
                for job_id in ids:
                    pipe.hmget(self.keys.job(job_id), [f.value for f in _FIELDS])
                rows = await pipe.execute()
            for job_id, (status, owner, team, shard_ids) in zip(ids, rows, strict=True):
                if status is None or JobStatus(status.decode()).is_final or (shard_ids and json.loads(shard_ids)):
                    continue  # ended, or a sharded query's parent: counted in no quota (its shards are)
                for kind, raw in ((ActiveJobsField.OWNER, owner), (ActiveJobsField.TEAM, team)):
                    name = json.loads(raw) if raw is not None else None
                    if isinstance(name, str) and name and kind.field(name) in fields:
                        found[kind.field(name)].add(job_id)
            if cursor == 0:
                return found


def _parse(field: str) -> tuple[ActiveJobsField | None, str]:
    kind, _, name = field.partition(":")
    try:
        return ActiveJobsField(kind), name
    except ValueError:  # not a count this recount knows: left alone
        return None, name
