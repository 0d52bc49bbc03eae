"""arq's Worker with a one-round-trip job start, and one that outlives a Redis outage.

arq takes a job with WATCH, EXISTS, ZSCORE and MULTI/PSETEX/EXEC: four round trips before the
job runs. The same check-and-set as one Lua script is atomic in the same way and costs one.
arq's poll loop ends the worker on the first Redis error; here the loop waits Redis out instead,
and a job whose start or finish was cut off by the outage is handed back (its in-progress key
removed) once Redis answers, so that it is taken again. Everything else is arq's own code; this
module is the only place that depends on arq's internals
(`start_jobs`, its semaphore and counters), which is why the arq version is pinned in pyproject.
"""

from __future__ import annotations

import asyncio
from typing import Any

from arq.constants import in_progress_key_prefix
from arq.utils import timestamp_ms
from arq.worker import Worker

from jobqueue.logs import get_logger
from jobqueue.outage import REDIS_UNREACHABLE, Outage, until_reachable

log = get_logger("jobqueue.consumer")

# KEYS[1] the job's in-progress key, KEYS[2] the queue; ARGV[1] job id, ARGV[2] now (ms),
# ARGV[3] in-progress timeout (ms). Returns the job's score when it was taken, else false.
_TAKE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not score or tonumber(score) > tonumber(ARGV[2]) then return false end
redis.call('PSETEX', KEYS[1], ARGV[3], '1')
return score
"""


class JobQueueWorker(Worker):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._outage = Outage(log, "the consumer")

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        """For each job id: take it (unless running elsewhere, finished, or deferred) and run it."""
        take = self.__dict__.get("_take") or self.__dict__.setdefault("_take", self.pool.register_script(_TAKE))
        for job_id_b in job_ids:
            await self.sem.acquire()
            if self.job_counter >= self.max_jobs:
                self.sem.release()
                return None
            self.job_counter += 1
            job_id = job_id_b.decode()
            try:
                score = await take(
                    keys=[in_progress_key_prefix + job_id, self.queue_name],
                    args=[job_id, timestamp_ms(), int(self.in_progress_timeout_s * 1000)],
                )
            except BaseException:  # Redis went away: give the slot back (the take may have happened: see run_job)
                self.job_counter -= 1
                self.sem.release()
                raise
            if not score:  # running elsewhere, already done, or re-queued with a delay
                self.job_counter -= 1
                self.sem.release()
                continue
            task = self.loop.create_task(self.run_job(job_id, int(float(score))))
            task.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
            self.tasks[job_id] = task

    async def _poll_iteration(self) -> None:
        try:
            await super()._poll_iteration()
        except REDIS_UNREACHABLE as e:
            await asyncio.sleep(self._outage.failed(e))
        else:
            self._outage.recovered()

    async def run_job(self, job_id: str, score: int) -> None:
        try:
            await super().run_job(job_id, score)
        except REDIS_UNREACHABLE:
            await self._hand_back(job_id)

    async def _hand_back(self, job_id: str) -> None:
        """arq could not read or finish the job: remove its in-progress key once Redis answers, so
        that it is taken again. The job record decides what the next take does (run, or skip a job
        that already finished)."""
        await until_reachable(lambda: self.pool.delete(in_progress_key_prefix + job_id),
                              Outage(log, f"handing back job {job_id}"), job_id=job_id)
