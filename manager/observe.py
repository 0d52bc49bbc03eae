"""Observe every resource group's queue and consumers in a fixed number of script calls sent at once.

`observe_in_chunks` / `read_groups` do the I/O; `summarize` turns raw replies into a frozen `GroupObservation` and is
pure, so the counting rules are unit-tested without Redis:
- ready    = queued jobs due now that no consumer is running (arq keeps running jobs in the queue);
  the oldest ready job is the oldest due one that is not running
- deferred = queued jobs due later (they do not wake consumers)
- held     = queued jobs due now that no consumer may take: their team runs its limit in the group
             (`jobqueue.fair_share`: JOBQUEUE_QUOTA_MAX_RUNNING_PER_TEAM and the team overrides). Looked for among the
             first due jobs only until `want` of them are known to be takeable (the most the group's decision can
             use) or `HELD_SCAN` were looked at; the jobs beyond count as ready. Not in `ready`.
- in flight = jobs a live consumer is running; entries of consumers with no fresh heartbeat are
  reported as orphaned (the reaper, `manager.reaper`, re-queues them)
- unreachable = queue members whose score is past any time (`+inf`, beyond year 9999): they would
  never be due, so no consumer would ever reject them; the manager does (`jobqueue.entries`)
- stale    = due entries, not running and not taken, of jobs that are over (their record final): left by a consumer
             lost between a job's last transition and arq's removal of its entry. Looked for from the first due
             entry that is not running up to the first that is not stale, only when at most `STALE_SCAN` due
             jobs are not running: a group with a live due job needs consumers anyway, whose takes drop them. Not
             in `ready`: they must not start a consumer of a group scaled to zero; the reaper drops them.

Whatever is written into Redis, one group's observation never stops another's: a group whose keys
cannot be read, or whose reply cannot be understood, is observed with its `error` set.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Iterable, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from pydantic import ValidationError
from redis.asyncio import Redis

from jobqueue.entries import MAX_TIME_MS
from jobqueue.fair_share import TEAM_LIMIT_OF_LUA
from jobqueue.jobstore import FINAL_STATUSES, STALE_ENTRY_LUA
from jobqueue.keys import SLOT, JobField, Keys, around
from jobqueue.logs import capped
from jobqueue.models import ConsumerInfo
from manager.policy import QueueStats


class GroupObservation(NamedTuple):
    group: str
    stats: QueueStats
    consumers: tuple[ConsumerInfo, ...]  # live (fresh heartbeat)
    stale_consumers: tuple[str, ...]  # ids whose heartbeat is too old or unreadable
    orphaned_jobs: tuple[str, ...]  # running entries whose consumer is gone
    oldest_ready_ms: int | None

    busy_ids: frozenset[str] = frozenset()
    running: Mapping[str, str] = MappingProxyType({})  # job id -> consumer id, live or not
    unreachable: tuple[str, ...] = ()  # queue members (arq ids) that can never be due
    stale_entries: tuple[str, ...] = ()  # job ids whose due entry is left over from a job that is over
    error: str | None = None  # the group could not be observed: why


def summarize(
    group: str,
    ready_total: int,
    deferred: int,
    running: dict[str, str],
    consumers_raw: dict[str, str],
    oldest_ready_ms: int | None,
    now: float,
    stale_after: float,
    held: int = 0,
    stale_entries: tuple[str, ...] = (),
) -> GroupObservation:
    """`ready_total`: the due jobs, running ones included; `held`: the due jobs, not running, whose team runs its
    limit; `stale_entries`: due entries of jobs that are over (neither running nor held)."""
    if not consumers_raw and not running:  # the common case for an idle or not yet started group
        ready = max(0, ready_total - held - len(stale_entries))
        return GroupObservation(group, QueueStats(ready, 0, deferred, 0, held), (), (), (), oldest_ready_ms,
                                stale_entries=stale_entries)
    live: list[ConsumerInfo] = []
    stale: list[str] = []
    for consumer_id, raw in consumers_raw.items():
        try:
            info = ConsumerInfo.model_validate_json(raw)
        except ValidationError:
            stale.append(consumer_id)
            continue
        if now - info.seen_at > stale_after:
            stale.append(consumer_id)
        else:
            live.append(info)
    live_ids = {c.consumer_id for c in live}
    in_flight = [job for job, owner in running.items() if owner in live_ids]
    orphaned = [job for job, owner in running.items() if owner not in live_ids]
    owners = set(running.values())
    # busy = holds a running entry (set atomically with the claim, released with the outcome)
    busy_ids = frozenset(c.consumer_id for c in live if c.consumer_id in owners)
    stats = QueueStats(
        ready=max(0, ready_total - len(running) - held - len(stale_entries)),
        in_flight=len(in_flight),
        deferred=deferred,
        busy_consumers=len(busy_ids),
        held=held,
    )
    return GroupObservation(
        group, stats, tuple(live), tuple(stale), tuple(orphaned), oldest_ready_ms, busy_ids, running,
        stale_entries=stale_entries,
    )


# Every group's queue counts, oldest ready job, running entries and consumers in one server-side
# script: a tick's cost in round trips and in client-side command packing does not grow with the
# number of groups. Each group's keys are built inside the script (single Redis, not Cluster), from the
# layout of `jobqueue.keys` passed in as the text around the group (`_templates`).
# ARGV[1] now (ms), ARGV[2] group names, comma-separated, ARGV[3] the last due time (ms); ARGV[4..11] the text
# before and after the group in a queue key, a running key, a consumers key, and around the job id in an arq id;
# ARGV[12..13] around the job id in a job's key, ARGV[14] its team field, ARGV[15] the teams' running limits
# (`fair_share.limits_json`, '' none), ARGV[16] each group's `want`, comma-separated in the order of ARGV[2],
# ARGV[17] `HELD_SCAN`, ARGV[18] arq's in-progress key prefix, ARGV[19] the status field, ARGV[20] the final
# statuses, comma-separated, ARGV[21] `STALE_SCAN`.
_OBSERVE = TEAM_LIMIT_OF_LUA + STALE_ENTRY_LUA + """
local now, max_ms = tonumber(ARGV[1]), ARGV[3]
local progress, status_field, finals, stale_scan = ARGV[18], ARGV[19], ARGV[20], tonumber(ARGV[21])
local queue_h, queue_t, running_h, running_t, consumers_h, consumers_t, arq_h, arq_t = unpack(ARGV, 4, 11)
local job_h, job_t, team_field = ARGV[12], ARGV[13], ARGV[14]
local limits = ARGV[15] ~= '' and cjson.decode(ARGV[15]) or nil
local wants, scan = {}, tonumber(ARGV[17])
for w in string.gmatch(ARGV[16], '[^,]+') do wants[#wants + 1] = tonumber(w) end
local out = {}
-- the job id of an arq id of this environment, or nil
local function job_of(member)
  if string.sub(member, 1, #arq_h) == arq_h and string.sub(member, #member - #arq_t + 1) == arq_t then
    return string.sub(member, #arq_h + 1, #member - #arq_t)
  end
  return nil
end
-- the due jobs, not running, whose team runs its limit: looked at from the head until `want` takeable ones are
-- found or `scan` were looked at (a job of a team with room takes one of its places, as a consumer would)
local function held_of(queue, running, busy, want)
  local runs = {}
  for j = 1, #running, 2 do
    local team = team_of_job(job_h, job_t, team_field, running[j])
    if team then runs[team] = (runs[team] or 0) + 1 end
  end
  local held, takeable, offset = 0, 0, 0
  while takeable < want and offset < scan do
    local page = redis.call('ZRANGEBYSCORE', queue, '-inf', now, 'LIMIT', offset, 100)
    for _, member in ipairs(page) do
      if not busy[member] then
        local id = job_of(member)
        local team = id and team_of_job(job_h, job_t, team_field, id)
        local limit = team and team_limit(limits, team)
        if limit and (runs[team] or 0) >= limit then held = held + 1
        else
          if limit then runs[team] = (runs[team] or 0) + 1 end
          takeable = takeable + 1
          if takeable >= want then break end
        end
      end
    end
    if #page < 100 then break end
    offset = offset + #page
  end
  return held
end
-- the first due entries, not running, that are left over from jobs that are over (not taken): up to the first
-- that is not, since a due job that is not over needs a consumer anyway, whose takes drop the rest. Each is marked
-- busy (not ready, not held). Most groups cost one HGET: their first due entry (in `head`) is a live job.
local function is_stale(member)
  local id = job_of(member)
  return id ~= nil and is_stale_entry(job_h .. id .. job_t, progress .. member, status_field, finals)
end
local function stale_of(queue, head, nrun, busy)
  local stale, first = {}, nil
  for j = 1, #head, 2 do  -- the first due entry that is not running (`head` holds one more than run)
    if not busy[head[j]] then first = head[j]; break end
  end
  if not first or not is_stale(first) then return stale end
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', queue, '-inf', now, 'LIMIT', 0, nrun + stale_scan)) do
    if not busy[member] then
      if member ~= first and not is_stale(member) then break end
      stale[#stale + 1] = job_of(member)
      busy[member] = true
    end
  end
  return stale
end
local function observe(g, want)
  local queue = queue_h .. g .. queue_t
  local running = redis.call('HGETALL', running_h .. g .. running_t)
  local total, ready, oldest, held, stale = redis.call('ZCARD', queue), 0, false, 0, {}
  if total > 0 then
    -- arq keeps running jobs in the queue: the oldest ready job is the first member that is not
    -- running, so look at one more member than there are running jobs.
    local nrun = #running / 2
    local head = redis.call('ZRANGE', queue, 0, nrun, 'WITHSCORES')
    local busy = {}
    for j = 1, #running, 2 do busy[arq_h .. running[j] .. arq_t] = true end  -- members are arq ids
    if #head >= 2 and tonumber(head[2]) <= now then
      if #head / 2 == total and tonumber(head[#head]) <= now then ready = total  -- saw every member
      else ready = redis.call('ZCOUNT', queue, '-inf', now) end
    end
    if ready > nrun and ready - nrun <= stale_scan then stale = stale_of(queue, head, nrun, busy) end
    if #stale > 0 then head = redis.call('ZRANGE', queue, 0, nrun + #stale, 'WITHSCORES') end  -- past them too
    for j = 1, #head, 2 do
      if tonumber(head[j + 1]) > now then break end
      if not busy[head[j]] then oldest = head[j + 1]; break end
    end
    if limits and ready > nrun + #stale then held = held_of(queue, running, busy, want) end
  end
  local never = {}
  if total > ready then never = redis.call('ZRANGEBYSCORE', queue, '(' .. max_ms, '+inf', 'LIMIT', 0, 100) end
  return {ready, total - ready, oldest, running, redis.call('HGETALL', consumers_h .. g .. consumers_t), never, held,
          stale}
end
local i = 0
for g in string.gmatch(ARGV[2], '[^,]+') do  -- group names, comma-separated: one argument to encode
  i = i + 1
  local ok, reply = pcall(observe, g, wants[i] or 0)  -- a key of the wrong type fails its own group only
  if ok then out[#out + 1] = reply
  else out[#out + 1] = {'!error', type(reply) == 'table' and reply.err or tostring(reply)} end
end
return out
"""


def _pairs(flat: list[bytes]) -> dict[str, str]:
    return {flat[i].decode(errors="replace"): flat[i + 1].decode(errors="replace") for i in range(0, len(flat), 2)}


class ObservationCache:
    """The last observation per group, reused while the group's raw reply is unchanged and no consumer's
    heartbeat has aged past `stale_after` since: a steady group costs a comparison, not a parse."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[list[Any], GroupObservation, float]] = {}

    def get(self, group: str, raw: list[Any], now: float) -> GroupObservation | None:
        entry = self.entries.get(group)
        if entry is not None and entry[0] == raw and now < entry[2]:
            return entry[1]
        return None

    def put(self, group: str, raw: list[Any], obs: GroupObservation, stale_after: float) -> None:
        valid_until = min((c.seen_at + stale_after for c in obs.consumers), default=float("inf"))
        self.entries[group] = (raw, obs, valid_until)


CHUNKS = 4  # concurrent script calls per observation: a fixed number, whatever the number of groups
HELD_SCAN = 1000  # the most due jobs of a group looked at per observation to count the held ones (module doc)
STALE_SCAN = 32  # stale entries are looked for when at most this many due jobs of a group are not running


async def observe_in_chunks(
    redis: Redis, keys: Keys, groups: Iterable[str], now: float, stale_after: float,
    cache: ObservationCache | None = None, chunks: int = CHUNKS, team_limits: str = "",
    wants: Mapping[str, int] | None = None,
) -> AsyncIterator[dict[str, GroupObservation]]:
    """Every group, in `chunks` script calls sent at once; yields each part as it arrives, so the
    caller works on one part while Redis computes the next (Redis and the manager use different CPUs).

    `team_limits` (`fair_share.limits_json`, '' none): count each group's held jobs, until `wants[group]` (default
    `HELD_SCAN`) takeable ones are found: the most jobs its consumers could run at once is enough."""
    names = list(groups)
    unnamed = [n for n in names if "," in n]  # a broken config's invalid name: it can have no queue
    if unnamed:
        yield {n: GroupObservation(n, QueueStats(0, 0, 0, 0), (), (), (), None) for n in unnamed}
        names = [n for n in names if "," not in n]
    if not names:
        return
    script = redis.register_script(_OBSERVE)
    now_ms = int(now * 1000)
    size = -(-len(names) // chunks)
    parts = [names[i:i + size] for i in range(0, len(names), size)]
    templates = _templates(keys)
    calls = [asyncio.ensure_future(script(args=[
        now_ms, ",".join(part), MAX_TIME_MS, *templates, JobField.TEAM.value, team_limits,
        ",".join(str(max(1, (wants or {}).get(g, HELD_SCAN))) for g in part), HELD_SCAN, keys.arq_in_progress_of(""),
        JobField.STATUS.value, FINAL_STATUSES, STALE_SCAN])) for part in parts]
    try:
        for part, call in zip(parts, calls, strict=True):
            yield _summarize_part(part, await call, now, stale_after, cache)
    finally:
        for call in calls:
            call.cancel()


def _templates(keys: Keys) -> list[str]:
    """The script's key layout: the text around the group in each key it reads, and around the job id in an arq id
    and in a job's key."""
    return [part for key in (keys.queue(SLOT), keys.running(SLOT), keys.consumers(SLOT), keys.arq_id(SLOT),
                             keys.job(SLOT)) for part in around(key)]


def _summarize_part(names: list[str], replies: list[Any], now: float, stale_after: float,
                    cache: ObservationCache | None) -> dict[str, GroupObservation]:
    out: dict[str, GroupObservation] = {}
    for g, raw in zip(names, replies, strict=True):
        obs = cache.get(g, raw, now) if cache is not None else None
        if obs is None:
            try:
                obs = _summarize_one(g, raw, now, stale_after)
            except Exception as e:  # whatever was written into Redis, the other groups go on
                error = raw[1].decode(errors="replace") if raw[:1] == [b"!error"] else f"{type(e).__name__}: {e}"
                obs = GroupObservation(g, QueueStats(0, 0, 0, 0), (), (), (), None, error=capped(error))
            if cache is not None and obs.error is None:
                cache.put(g, raw, obs, stale_after)
        out[g] = obs
    return out


def _summarize_one(g: str, raw: list[Any], now: float, stale_after: float) -> GroupObservation:
    if raw[:1] == [b"!error"]:
        raise RuntimeError("observing the group failed")
    ready_total, deferred, oldest, running, consumers, never, held, stale = raw
    obs = summarize(g, int(ready_total), int(deferred), _pairs(running), _pairs(consumers), _score_ms(oldest),
                    now, stale_after, int(held), tuple(j.decode(errors="replace") for j in stale))
    return obs._replace(unreachable=tuple(m.decode(errors="replace") for m in never)) if never else obs


def _score_ms(raw: bytes | None) -> int | None:
    """A score as whole milliseconds; `-inf` (any score below zero, or not finite) counts as 0: the
    entry is due, and the consumer that takes it rejects it."""
    if not raw:
        return None
    score = float(raw)
    return int(score) if math.isfinite(score) and score > 0 else 0


async def read_groups(
    redis: Redis, keys: Keys, groups: Iterable[str], now: float, stale_after: float,
    cache: ObservationCache | None = None, team_limits: str = "", wants: Mapping[str, int] | None = None,
) -> dict[str, GroupObservation]:
    """Every group's observation at once."""
    out: dict[str, GroupObservation] = {}
    async for part in observe_in_chunks(redis, keys, groups, now, stale_after, cache, team_limits=team_limits,
                                        wants=wants):
        out.update(part)
    return out
