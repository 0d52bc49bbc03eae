"""arq's Worker with a one-round-trip job start, and one that outlives a Redis outage.

arq takes a job with WATCH, EXISTS, ZSCORE and MULTI/PSETEX/EXEC: four round trips before the
job runs. The same check-and-set as one Lua script is atomic in the same way and costs one. Its lock
lives a lease of a few heartbeat TTLs (`jobstore.lock_lease_ms`), renewed with the job's heartbeat,
not arq's job timeout (hours): a consumer killed before its claim, where the reaper cannot see it,
strands the entry only that long.
arq's poll loop ends the worker on the first Redis error; here the loop waits Redis out instead,
and a job whose start or finish was cut off by the outage is handed back (its in-progress key
removed) once Redis answers, so that it is taken again. Everything else is arq's own code; this
module is the only place that depends on arq's internals
(`start_jobs`, its semaphore and counters), which is why the arq version is pinned in pyproject.

The take also returns the entry's envelope, so that an entry arq would refuse or crash on (a score
that is not a time, an undecodable or foreign envelope, an enqueue time out of range, a member of
another environment) is rejected here, once, with its job record failed (`jobqueue.entries`); it
never reaches arq. Anything arq still fails on unexpectedly is rejected the same way.

An idle worker does not poll its queue every `poll_delay` only: it waits for a wake-up (`wake_on`: a pub/sub
channel and the message that means "work for you", the SDK's `submitted:<group>` on `<p>events`), or for one
of its jobs to end (a slot is free for the backlog), and looks at its queue at once; `poll_delay` stays as the
slow fallback for what no message announces (deferred retries, a message lost while resubscribing).

arq reads the first `queue_read_limit` (100) due entries of its queue and tries each. With team limits, or when that
page is full (a long run of running or held entries at the head of the queue), the worker asks instead for the first
entries it may take (`_FIND`, one script: past the running ones, and past the jobs whose team runs its limit in the
group, looking at most at `FIND_SCAN` entries), so a job that can run behind more than a page of held ones is taken.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from arq.constants import in_progress_key_prefix, job_key_prefix
from arq.utils import timestamp_ms
from arq.worker import Worker
from redis.commands.core import AsyncScript

from jobqueue.entries import entry_problem
from jobqueue.fair_share import TEAM_LIMIT_LUA, TEAM_LIMIT_OF_LUA
from jobqueue.jobstore import lock_lease_ms
from jobqueue.keys import SLOT, JobField, around
from jobqueue.logs import get_logger
from jobqueue.outage import REDIS_UNREACHABLE, Outage, until_reachable

log = get_logger("jobqueue.consumer")

# KEYS[1] the job's in-progress key, KEYS[2] the queue, KEYS[3] its arq job, KEYS[4] its record, KEYS[5] the group's
# running hash; ARGV[1] arq id, ARGV[2] now (ms), ARGV[3] the lock's lease (ms: `jobstore.lock_lease_ms`), ARGV[4] the
# teams' running limits (`fair_share.limits_json`, '' none), ARGV[5], ARGV[6] a job's key around its id, ARGV[7] the
# team field, ARGV[8] the job id. Returns {score, envelope or false} when it was taken, else false: running elsewhere,
# done, deferred, or its team runs its limit in the group (it stays queued in its place; the claim counts again).
_TAKE = TEAM_LIMIT_LUA + """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not score then return false end
local due = tonumber(score)
if due and due > tonumber(ARGV[2]) then return false end
if ARGV[4] ~= '' then
  local ok, team = pcall(cjson.decode, redis.call('HGET', KEYS[4], ARGV[7]) or 'null')
  if ok and type(team) == 'string' and team ~= '' and
     team_running(cjson.decode(ARGV[4]), KEYS[5], ARGV[5], ARGV[6], ARGV[7], ARGV[8], team) then return false end
end
redis.call('PSETEX', KEYS[1], ARGV[3], '1')
return {score, redis.call('GET', KEYS[3])}
"""

FIND_SCAN = 1000  # the most due entries one look at the queue reads, to find those it may take (`_FIND`)
FIND_PAGE = 100  # entries read per step of that look
# The first ARGV[2] entries of the queue KEYS[1], due by ARGV[1] (ms), that are not running (no in-progress key:
# ARGV[10] .. entry) and whose team may start one more job in the group (its running hash KEYS[2]: jobs of a team
# found earlier count as started), looking at most at ARGV[3] entries. ARGV[4] the teams' running limits
# (`fair_share.limits_json`, '' none), ARGV[5], ARGV[6] a job's key around its id, ARGV[7] the team field, ARGV[8],
# ARGV[9] an arq id around the job id (an entry of another environment is returned: the take rejects it), ARGV[10]
# arq's in-progress key prefix, ARGV[11] the entries read per step.
_FIND = TEAM_LIMIT_OF_LUA + """
local want, scan, step = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[11])
local limits = ARGV[4] ~= '' and cjson.decode(ARGV[4]) or nil
local job_h, job_t, field, arq_h, arq_t, progress = ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10]
local runs = nil  -- the running jobs of each team, counted when a limited team is first met
local found, offset = {}, 0
while #found < want and offset < scan do
  local page = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', offset, step)
  for _, member in ipairs(page) do
    if redis.call('EXISTS', progress .. member) == 0 then
      local team, limit = nil, nil
      if limits and string.sub(member, 1, #arq_h) == arq_h and string.sub(member, #member - #arq_t + 1) == arq_t then
        team = team_of_job(job_h, job_t, field, string.sub(member, #arq_h + 1, #member - #arq_t))
        limit = team and team_limit(limits, team)
      end
      if limit and runs == nil then
        runs = {}
        for _, id in ipairs(redis.call('HKEYS', KEYS[2])) do
          local t = team_of_job(job_h, job_t, field, id)
          if t then runs[t] = (runs[t] or 0) + 1 end
        end
      end
      if not limit then found[#found + 1] = member
      elseif (runs[team] or 0) < limit then
        runs[team] = (runs[team] or 0) + 1
        found[#found + 1] = member
      end
      if #found >= want then break end
    end
  end
  if #page < step then break end
  offset = offset + #page
end
return found
"""


class JobQueueWorker(Worker):
    def __init__(self, *args: Any, wake_on: tuple[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._outage = Outage(log, "the consumer")
        self._take_script: AsyncScript | None = None
        self._find_script: AsyncScript | None = None
        # arq sleeps poll_delay between looks; here the look waits for a wake-up instead, at most that long
        self._idle_poll, self.poll_delay_s = self.poll_delay_s, 0.0
        self._wake = asyncio.Event()
        self._wake_on = (wake_on[0], wake_on[1].encode()) if wake_on else None
        self._listener: asyncio.Task[None] | None = None

    @property
    def _take(self) -> AsyncScript:
        """The take script, registered on first use: arq connects `self.pool` only once the worker runs."""
        if self._take_script is None:
            self._take_script = self.pool.register_script(_TAKE)
        return self._take_script

    async def _takeable(self) -> list[bytes]:
        """The first due entries of the queue this worker may take now, as many as it has free slots (`_FIND`)."""
        if self._find_script is None:
            self._find_script = self.pool.register_script(_FIND)
        consumer = self.ctx["consumer"]
        keys = consumer.keys
        found: list[bytes] = await self._find_script(
            keys=[self.queue_name, keys.running(consumer.group)],
            args=[timestamp_ms(), max(1, self.max_jobs - self.job_counter), FIND_SCAN, consumer.team_limits,
                  *consumer.store.job_key_around, JobField.TEAM.value, *around(keys.arq_id(SLOT)),
                  in_progress_key_prefix, FIND_PAGE])
        return found

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        """For each job id: take it (unless running elsewhere, finished, or deferred) and run it. With team limits,
        or a full page, the ids are those the worker may take (`_takeable`) rather than arq's first page."""
        take, consumer = self._take, self.ctx["consumer"]
        keys, limits = consumer.keys, consumer.team_limits
        job_head, job_tail = consumer.store.job_key_around
        lease_ms = lock_lease_ms(consumer.settings.job_heartbeat_ttl_seconds)
        if job_ids and (limits or len(job_ids) >= self.queue_read_limit):
            job_ids = await self._takeable()
        for job_id_b in job_ids:
            await self.sem.acquire()
            if self.job_counter >= self.max_jobs:
                self.sem.release()
                return None
            self.job_counter += 1
            job_id = job_id_b.decode()
            ours = keys.job_id_of(job_id) or ""
            try:
                taken = await take(
                    keys=[in_progress_key_prefix + job_id, self.queue_name, job_key_prefix + job_id, keys.job(ours),
                          keys.running(consumer.group)],
                    args=[job_id, timestamp_ms(), lease_ms, limits if ours else "",
                          job_head, job_tail, JobField.TEAM.value, ours],
                )
            except BaseException:  # Redis went away: give the slot back (the take may have happened: see run_job)
                self.job_counter -= 1
                self.sem.release()
                raise
            if not taken:  # running elsewhere, already done, re-queued with a delay, or its team at its limit
                self.job_counter -= 1
                self.sem.release()
                continue
            score, envelope = taken
            problem = entry_problem(self.ctx["consumer"].keys, job_id, score, envelope)
            if problem is None:
                task = self.loop.create_task(self.run_job(job_id, int(float(score))))
            else:
                task = self.loop.create_task(self._reject(job_id, problem))
            task.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
            self.tasks[job_id] = task

    async def _poll_iteration(self) -> None:
        if self._listener is None and self._wake_on is not None:
            self._listener = asyncio.create_task(self._listen_for_work(*self._wake_on), name="wake-on-submit")
        self._wake.clear()  # a wake-up from here on makes the next look come at once
        try:
            await super()._poll_iteration()
        except REDIS_UNREACHABLE as e:
            await asyncio.sleep(self._outage.failed(e))
            return
        self._outage.recovered()
        await woken_or_timed_out(self._wake, self._idle_poll)

    async def _listen_for_work(self, channel: str, message: bytes) -> None:
        """Wake the poll loop on each `message` on `channel`, for as long as the worker runs. (Re)subscribing
        wakes it too: what was submitted while there was no subscription is found by that look."""
        while True:
            pubsub = self.pool.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(channel)
                self._wake.set()
                while True:
                    got = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                    if got is not None and got.get("data") == message:
                        self._wake.set()
            except REDIS_UNREACHABLE as e:  # the poll loop reports the outage; polling carries on meanwhile
                log.debug("wake-up subscription lost; resubscribing", error=str(e))
                await asyncio.sleep(1.0)
            except Exception:  # never let the listener die silently: polling still works without it
                log.warning("wake-up listener failed; resubscribing", exc_info=True)
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.shield(pubsub.aclose())

    def _release_sem_dec_counter_on_complete(self) -> None:
        super()._release_sem_dec_counter_on_complete()
        self._wake.set()  # a slot is free: take the next queued job now, not at the next poll

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        await super().close()

    async def run_job(self, job_id: str, score: int) -> None:
        try:
            await super().run_job(job_id, score)
        except REDIS_UNREACHABLE:
            await self._hand_back(job_id)
        except Exception as e:  # arq itself failed on this entry: it would stay in progress, and queued, for hours
            await self._reject(job_id, f"arq could not run it: {type(e).__name__}: {e}")

    async def finish_failed_job(self, job_id: str, result_data: bytes | None) -> None:
        """arq refused the job before running it (its checks after ours: the retry counter): reject it."""
        await super().finish_failed_job(job_id, result_data)
        await self._reject(job_id, "arq refused it before it ran (see arq's line before this one)")

    async def _reject(self, job_id: str, reason: str) -> None:
        await until_reachable(lambda: self.ctx["consumer"].reject(job_id, reason),
                              Outage(log, f"rejecting queue entry {job_id}"), job_id=job_id)

    async def _hand_back(self, job_id: str) -> None:
        """arq could not read or finish the job: remove its in-progress key once Redis answers, so
        that it is taken again. The job record decides what the next take does (run, or skip a job
        that already finished)."""
        await until_reachable(lambda: self.pool.delete(in_progress_key_prefix + job_id),
                              Outage(log, f"handing back job {job_id}"), job_id=job_id)


async def woken_or_timed_out(wake: asyncio.Event, seconds: float) -> None:
    """Until `wake` is set or `seconds` pass. Not `asyncio.wait_for`: before Python 3.12 it returns instead of
    raising when its task is cancelled in the loop iteration in which `wake` is set (cpython gh-86296). The drain
    cancels the poll loop once; that cancel was lost to a wake-up (a subscription made, a submission announced), and
    the drained consumer polled on, taking nothing, until SIGKILL."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await wake.wait()
