"""The Lua scripts of `JobStore` and the counts they add, as data. Pure, no I/O.

No name is written in the Lua: every key comes in KEYS, every job field in ARGV[1] (`NAMES`), every status in
ARGV, and every counter as the text before and after the group in its field (`keys.around`), because the
group is read from the record inside the script. So the names live in `jobqueue.keys` alone.
"""

from __future__ import annotations

import json

from jobqueue.keys import SLOT, ActiveJobsField, CounterName, HistogramName, JobField, TeamCounterName, around
from jobqueue.models import JobStatus, PerformanceSummary

# ARGV[1] of every script: the job fields it reads and writes, as JSON {status = <JobField.STATUS>, ...}, and the
# fields of <p>active-jobs as {head, tail} around the owner or team (`active_owner`, `active_team`)
NAMES = json.dumps({**{f.name.lower(): f.value for f in (JobField.STATUS, JobField.RESOURCE_GROUP, JobField.CONSUMER_ID,
                                                         JobField.STARTED_AT, JobField.PROGRESS, JobField.ATTEMPTS,
                                                         JobField.ERRORS, JobField.FINISHED_AT,
                                                         JobField.CANCEL_REQUESTED, JobField.TEAM, JobField.OWNER,
                                                         JobField.ATTEMPT_STARTS, JobField.ATTEMPT_ENDS)},
                    **{f"active_{f.value}": around(f.field(SLOT)) for f in ActiveJobsField}})
GROUP_FUNCTIONS = """
local function group_of(job)
  return cjson.decode(redis.call('HGET', job, N.resource_group) or '""')
end
local function team_of(job)
  local raw = redis.call('HGET', job, N.team)
  if not raw then return nil end
  local team = cjson.decode(raw)
  if type(team) ~= 'string' or team == '' then return nil end
  return team
end
-- a job that is over no longer counts against its owner's and team's queued-jobs quotas (<p>active-jobs, KEYS
-- given): -1 on each, and a field that reaches 0 (or below: a job submitted before the counts existed) is removed
local function release_active(active, job)
  for _, who in ipairs({{N.owner, N.active_owner}, {N.team, N.active_team}}) do
    local raw = redis.call('HGET', job, who[1])
    local name = raw and cjson.decode(raw)
    if type(name) == 'string' and name ~= '' then
      local field = who[2][1] .. name .. who[2][2]
      if redis.call('HINCRBY', active, field, -1) <= 0 then redis.call('HDEL', active, field) end
    end
  end
end
-- a JSON list field as a table (empty when absent)
local function list_of(job, field)
  return cjson.decode(redis.call('HGET', job, field) or '[]')
end
-- counts: JSON list of {head, tail, amount, 'i' or 'f'[, 't']}; the field is head .. group .. tail, or with 't'
-- head .. team .. tail (not counted for a job without a team)
local function count(counters, job, counts)
  local group = group_of(job)
  for _, c in ipairs(cjson.decode(counts)) do
    local name = group
    if c[5] == 't' then name = team_of(job) end
    if name then
      local field = c[1] .. name .. c[2]
      if c[4] == 'f' then redis.call('HINCRBYFLOAT', counters, field, c[3])
      else redis.call('HINCRBY', counters, field, c[3]) end
    end
  end
end
"""

# KEYS[1] job hash, KEYS[2] deadlines zset, KEYS[3] counters, KEYS[4] active jobs; to release the job from its
# consumer, also KEYS[5] its group's running hash and KEYS[6] its heartbeat, from which it is removed.
# ARGV[1] names; ARGV[2] comma-separated allowed current states; ARGV[3] new state; ARGV[4] job id;
# ARGV[5] required consumer_id, JSON ('' for any); ARGV[6] '1' when the new state is final; ARGV[7] the counts (see
# `count`); ARGV[8] the job's finished channel, told the new state when it is final; ARGV[9] the job's changed
# channel, told the new state at every applied transition ('' none); ARGV[10] listing-index JSON (console-jobs);
# ARGV[11..] field/value pairs, where a pair named N.attempt_ends appends its time to that list when an attempt is open
# (more starts than ends), and is dropped otherwise.
# One round trip. Returns 1 applied, 0 wrong state or owner, -1 no such job.
TRANSITION = "local N = cjson.decode(ARGV[1])" + GROUP_FUNCTIONS + """
local cur = redis.call('HGET', KEYS[1], N.status)
if not cur then return -1 end
if ARGV[5] ~= '' and redis.call('HGET', KEYS[1], N.consumer_id) ~= ARGV[5] then return 0 end
for s in string.gmatch(ARGV[2], '[^,]+') do
  if s == cur then
    redis.call('HSET', KEYS[1], N.status, ARGV[3])
    count(KEYS[3], KEYS[1], ARGV[7])
    for i = 11, #ARGV, 2 do
      if ARGV[i] == N.attempt_ends then
        local ends = list_of(KEYS[1], N.attempt_ends)
        if #list_of(KEYS[1], N.attempt_starts) > #ends then
          table.insert(ends, cjson.decode(ARGV[i + 1]))
          redis.call('HSET', KEYS[1], N.attempt_ends, cjson.encode(ends))
        end
      else
        redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
      end
    end
    if #KEYS == 6 then
      redis.call('HDEL', KEYS[5], ARGV[4])
      redis.call('DEL', KEYS[6])
    end
    if ARGV[6] == '1' then
      redis.call('ZREM', KEYS[2], ARGV[4])
      release_active(KEYS[4], KEYS[1])
      redis.call('PUBLISH', ARGV[8], ARGV[3])
    end
    if ARGV[9] ~= '' then redis.call('PUBLISH', ARGV[9], ARGV[3]) end
    return 1
  end
end
return 0
"""

# KEYS[1] job hash, KEYS[2] running hash, KEYS[3] heartbeat, KEYS[4] counters. ARGV[1] names, ARGV[2] queued,
# ARGV[3] running, ARGV[4] consumer id, ARGV[5] the same as JSON, ARGV[6] started_at JSON, ARGV[7] heartbeat TTL
# milliseconds, ARGV[8] job id, ARGV[9] the counts, ARGV[10] the job's changed channel ('' none), ARGV[11]
# listing-index JSON (console-jobs). queued -> running, attempt counted and its start appended to attempt_starts,
# running entry and heartbeat set, `running` published on the changed channel: one round trip. Returns
# {1, attempts, errors JSON} when claimed, {0, status} when not, {-1} with no record.
CLAIM = "local N = cjson.decode(ARGV[1])" + GROUP_FUNCTIONS + """
local cur = redis.call('HGET', KEYS[1], N.status)
if not cur then return {-1} end
if cur ~= ARGV[2] then return {0, cur} end
redis.call('HSET', KEYS[1], N.status, ARGV[3], N.consumer_id, ARGV[5], N.started_at, ARGV[6], N.progress, '0.0')
count(KEYS[4], KEYS[1], ARGV[9])
local attempts = redis.call('HINCRBY', KEYS[1], N.attempts, 1)
local starts = list_of(KEYS[1], N.attempt_starts)
table.insert(starts, cjson.decode(ARGV[6]))
redis.call('HSET', KEYS[1], N.attempt_starts, cjson.encode(starts))
redis.call('HSET', KEYS[2], ARGV[8], ARGV[4])
redis.call('SET', KEYS[3], ARGV[4], 'PX', ARGV[7])
if ARGV[10] ~= '' then redis.call('PUBLISH', ARGV[10], ARGV[3]) end
return {1, attempts, redis.call('HGET', KEYS[1], N.errors) or '[]'}
"""

# KEYS[1] job hash, KEYS[2] counters, KEYS[3] deadlines, KEYS[4] the job's queue, KEYS[5] its arq job, KEYS[6] active
# jobs. ARGV[1] names,
# ARGV[2] finished_at JSON, ARGV[3] job id, ARGV[4] arq id, ARGV[5] the job's resource_group as stored (JSON),
# ARGV[6] queued, ARGV[7] running, ARGV[8] cancelled, ARGV[9] the counts, ARGV[10] the job's finished channel,
# ARGV[11] its changed channel ('' none: told `cancelled`, or `running` when a stop was requested), ARGV[12]
# listing-index JSON (console-jobs).
# Replies with a `jobstore.CancelOutcome`: queued -> cancelled (told on its finished channel), out of its queue,
# deadlines and arq (1); running ->
# cancel_requested (2); else 0; none -1; or -2 (RECORD_REPLACED) when the record's group is not ARGV[5] (it was replaced
# since it was read: read it again).
REQUEST_CANCEL = "local N = cjson.decode(ARGV[1])" + GROUP_FUNCTIONS + """
local cur = redis.call('HGET', KEYS[1], N.status)
if not cur then return -1 end
if (redis.call('HGET', KEYS[1], N.resource_group) or '""') ~= ARGV[5] then return -2 end
if cur == ARGV[6] then
  redis.call('HSET', KEYS[1], N.status, ARGV[8], N.finished_at, ARGV[2])
  count(KEYS[2], KEYS[1], ARGV[9])
  release_active(KEYS[6], KEYS[1])
  redis.call('ZREM', KEYS[3], ARGV[3])
  redis.call('ZREM', KEYS[4], ARGV[4])
  redis.call('DEL', KEYS[5])
  redis.call('PUBLISH', ARGV[10], ARGV[8])
  if ARGV[11] ~= '' then redis.call('PUBLISH', ARGV[11], ARGV[8]) end
  return 1
end
if cur == ARGV[7] then
  redis.call('HSET', KEYS[1], N.cancel_requested, 'true')
  if ARGV[11] ~= '' then redis.call('PUBLISH', ARGV[11], ARGV[7]) end
  return 2
end
return 0
"""
RECORD_REPLACED = -2  # REQUEST_CANCEL's reply when the record changed group under it (never a `CancelOutcome`)

# Create a job: its record, index entry, counters and deadline, and (KEYS[8] given) its arq job and queue entry, in
# one script, after checking the queued-jobs quotas: so no crash leaves a record without its queue entry, and two
# submits racing for the last slot of a quota cannot both pass.
# KEYS[1] job hash, KEYS[2] arq job, KEYS[3] arq result, KEYS[4] jobs index, KEYS[5] counters, KEYS[6] deadlines,
# KEYS[7] active jobs[, KEYS[8] the queue]. ARGV[1] the record as a JSON list of field, value (stored text), ARGV[2]
# its TTL seconds, ARGV[3] job id, ARGV[4] submitted ms, ARGV[5] deadline ms or '', ARGV[6] counter fields to +1 (JSON
# list), ARGV[7] active-jobs fields to +1 with their limits (JSON list of {field, limit}, 0: none), ARGV[8] arq id,
# ARGV[9] arq job payload, ARGV[10] its TTL ms, ARGV[11] its queue score (ms), ARGV[12] listing-index JSON
# (console-jobs), ARGV[13] fair-share JSON (fair), ARGV[14] the channel told of the submission once it is written
# ('' none: <p>events, which wakes the manager and the group's idle consumers), ARGV[15] the message told there.
# Returns {1} created; {0} the id exists already (its record, arq job or arq result); {-1, i, count} the i-th limit
# of ARGV[7] is reached (count unfinished jobs): nothing written.
SUBMIT = """
if redis.call('EXISTS', KEYS[1], KEYS[2], KEYS[3]) > 0 then return {0} end
local active = cjson.decode(ARGV[7])
for i, a in ipairs(active) do
  local n = tonumber(redis.call('HGET', KEYS[7], a[1]) or '0')
  if a[2] > 0 and n >= a[2] then return {-1, i, n} end
end
redis.call('HSET', KEYS[1], unpack(cjson.decode(ARGV[1])))
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[3])
for _, field in ipairs(cjson.decode(ARGV[6])) do redis.call('HINCRBY', KEYS[5], field, 1) end
for _, a in ipairs(active) do redis.call('HINCRBY', KEYS[7], a[1], 1) end
if ARGV[5] ~= '' then redis.call('ZADD', KEYS[6], ARGV[5], ARGV[3]) end
if #KEYS == 8 then
  redis.call('SET', KEYS[2], ARGV[9], 'PX', ARGV[10])
  redis.call('ZADD', KEYS[8], ARGV[11], ARGV[8])
end
if (ARGV[14] or '') ~= '' then redis.call('PUBLISH', ARGV[14], ARGV[15]) end
return {1}
"""
SUBMIT_CREATED, SUBMIT_EXISTS, SUBMIT_OVER_QUOTA = 1, 0, -1

# KEYS[1] oom-kill:<consumer>, KEYS[2] counters. ARGV[1] the kill as JSON, ARGV[2] its kill id, ARGV[3] the counter
# field (`oom_kills:<group>`), ARGV[4] TTL ms, ARGV[5] the name of the kill id in the JSON. Keeps the consumer's latest
# kill and counts it once per kill id. Returns 1 when new.
RECORD_OOM_KILL = """
local known = redis.call('GET', KEYS[1])
if known and cjson.decode(known)[ARGV[5]] == ARGV[2] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[4])
redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
return 1
"""
KILL_ID = "kill_id"  # in the JSON of <p>oom-kill:<consumer>
# head, tail (around the group), amount, 'i' (HINCRBY) or 'f' (HINCRBYFLOAT)[, 't': around the team, not the group]
Count = tuple[str, ...]


def count(counter: CounterName, amount: int = 1) -> Count:
    return (*around(counter.field(SLOT)), str(amount), "i")


def team_count(counter: TeamCounterName) -> Count:
    """One more of a per-team counter for the job's team (nothing for a job without one)."""
    return (*around(counter.field(SLOT)), "1", "i", "t")


def _observe(histogram: HistogramName, value: float) -> list[Count]:
    """One value into a histogram's cumulative buckets, `+Inf` and `sum`."""
    def at(le: str) -> tuple[str, str]:
        return around(histogram.field(SLOT, le))

    counts: list[Count] = [(*at(str(le)), "1", "i") for le in histogram.buckets if value <= le]
    return counts + [(*at("+Inf"), "1", "i"), (*at("sum"), repr(float(value)), "f")]


def summary_counts(sm: PerformanceSummary) -> list[Count]:
    """What a succeeded job's summary adds to the counters and histograms."""
    counts = [count(CounterName.SPILLED_BYTES, sm.spilled_bytes)]
    if sm.scan_cache_enabled:
        counts += [count(CounterName.SCAN_CACHE_BYTES_CACHE, sm.bytes_from_cache),
                   count(CounterName.SCAN_CACHE_BYTES_REMOTE, sm.bytes_from_remote),
                   count(CounterName.SCAN_CACHE_EVICTIONS, sm.scan_cache_evictions),
                   count(CounterName.SCAN_CACHE_HITS, sm.scan_cache_hits),
                   count(CounterName.SCAN_CACHE_MISSES, sm.scan_cache_misses)]
    return (counts + _observe(HistogramName.JOB_QUEUE_WAIT_SECONDS, sm.queue_wait_seconds)
            + _observe(HistogramName.JOB_RUN_SECONDS, sm.total_seconds)
            + _observe(HistogramName.JOB_SPILLED_BYTES, sm.spilled_bytes))


def failed_run_counts(run_seconds: float) -> list[Count]:
    """What a failed job's run adds to the run-time histogram (its `failed` outcome)."""
    return _observe(HistogramName.JOB_FAILED_RUN_SECONDS, run_seconds)


def transition_counter(new: JobStatus) -> CounterName:
    return CounterName.RETRIED if new is JobStatus.QUEUED else CounterName(new.value)


def transition_counts(new: JobStatus) -> list[Count]:
    """The counts of a transition to `new`: its group's counter, and for an outcome its team's."""
    counts = [count(transition_counter(new))]
    if new.is_final:
        counts.append(team_count(TeamCounterName(new.value)))
    return counts
