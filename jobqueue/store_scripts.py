"""The Lua scripts of `JobStore` and the counts they add, as data. Pure, no I/O.

No name is written in the Lua: every key comes in KEYS, every job field in ARGV[1] (`NAMES`), every status in
ARGV, and every counter as the text before and after the group in its field (`keys.around`), because the
group is read from the record inside the script. So the names live in `jobqueue.keys` alone.
"""

from __future__ import annotations

import json

from jobqueue.fair_share import FAIR_SCORE_LUA, TEAM_LIMIT_LUA
from jobqueue.keys import SLOT, ActiveJobsField, CounterName, HistogramName, JobField, TeamCounterName, around
from jobqueue.models import JobStatus, PerformanceSummary

# ARGV[1] of every script: the job fields it reads and writes, as JSON {status = <JobField.STATUS>, ...}, and the
# fields of <p>active-jobs as {head, tail} around the owner or team (`active_owner`, `active_team`)
NAMES = json.dumps({**{f.name.lower(): f.value for f in (JobField.STATUS, JobField.RESOURCE_GROUP, JobField.CONSUMER_ID,
                                                         JobField.STARTED_AT, JobField.PROGRESS, JobField.ATTEMPTS,
                                                         JobField.ERRORS, JobField.FINISHED_AT,
                                                         JobField.CANCEL_REQUESTED, JobField.TEAM, JobField.OWNER,
                                                         JobField.ATTEMPT_STARTS, JobField.ATTEMPT_ENDS,
                                                         JobField.SHARD_IDS)},
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

# The listing indexes (`jobqueue.keys.ListingIndex`): `L` is the listing-index JSON argument of a script ('' : none),
# {jobs, state = {status -> key}, running, final = {status -> true}, wait, duration, now (ms)} (`listing_json`).
# `relist` moves job `id` from the state index of `from` to that of `to`, scored by its submission ms (its score in
# <p>jobs); its first start records its wait, and a final state its duration since that first start (whole ms, so a
# cursor holds them exactly).
LISTING_FUNCTIONS = """
local function listing(arg)
  if arg == nil or arg == '' then return nil end
  return cjson.decode(arg)
end
local function relist(L, id, from, to)
  if L == nil then return end
  local submitted = redis.call('ZSCORE', L.jobs, id)
  if not submitted then return end
  if from and L.state[from] then redis.call('ZREM', L.state[from], id) end
  if L.state[to] then redis.call('ZADD', L.state[to], submitted, id) end
  if to == L.running then redis.call('ZADD', L.wait, 'NX', math.max(0, math.floor(L.now - submitted + 0.5)), id) end
  if L.final[to] then
    local wait = redis.call('ZSCORE', L.wait, id)
    if wait then redis.call('ZADD', L.duration, math.max(0, math.floor(L.now - submitted - wait + 0.5)), id) end
  end
end
"""

# KEYS[1] job hash, KEYS[2] deadlines zset, KEYS[3] counters, KEYS[4] active jobs; to release the job from its
# consumer, also KEYS[5] its group's running hash and KEYS[6] its heartbeat, from which it is removed.
# ARGV[1] names; ARGV[2] comma-separated allowed current states; ARGV[3] new state; ARGV[4] job id;
# ARGV[5] required consumer_id, JSON ('' for any); ARGV[6] '1' when the new state is final; ARGV[7] the counts (see
# `count`); ARGV[8] the job's finished channel, told the new state when it is final; ARGV[9] the job's changed
# channel, told the new state at every applied transition ('' none); ARGV[10] the listing-index JSON ('' none);
# ARGV[11..] field/value pairs, where a pair named N.attempt_ends appends its time to that list when an attempt is open
# (more starts than ends), and is dropped otherwise.
# One round trip. Returns 1 applied, 0 wrong state or owner, -1 no such job.
TRANSITION = "local N = cjson.decode(ARGV[1])" + GROUP_FUNCTIONS + LISTING_FUNCTIONS + """
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
    relist(listing(ARGV[10]), ARGV[4], cur, ARGV[3])
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
# the listing-index JSON ('' none), ARGV[12] the teams' running limits (`fair_share.limits_json`, '' none), ARGV[13],
# ARGV[14] the job key around its id. queued -> running, attempt counted and its start appended to attempt_starts,
# running entry and heartbeat set, `running` published on the changed channel: one round trip. Returns
# {1, attempts, errors JSON} when claimed, {0, status} when not, {-1} with no record, {2, running} when its team runs
# its limit.
CLAIM = "local N = cjson.decode(ARGV[1])" + GROUP_FUNCTIONS + LISTING_FUNCTIONS + TEAM_LIMIT_LUA + """
local cur = redis.call('HGET', KEYS[1], N.status)
if not cur then return {-1} end
if cur ~= ARGV[2] then return {0, cur} end
if ARGV[12] and ARGV[12] ~= '' then
  local team = team_of(KEYS[1])
  local n = team and team_running(cjson.decode(ARGV[12]), KEYS[2], ARGV[13], ARGV[14], N.team, ARGV[8], team)
  if n then return {2, n} end
end
redis.call('HSET', KEYS[1], N.status, ARGV[3], N.consumer_id, ARGV[5], N.started_at, ARGV[6], N.progress, '0.0')
count(KEYS[4], KEYS[1], ARGV[9])
local attempts = redis.call('HINCRBY', KEYS[1], N.attempts, 1)
local starts = list_of(KEYS[1], N.attempt_starts)
table.insert(starts, cjson.decode(ARGV[6]))
redis.call('HSET', KEYS[1], N.attempt_starts, cjson.encode(starts))
redis.call('HSET', KEYS[2], ARGV[8], ARGV[4])
redis.call('SET', KEYS[3], ARGV[4], 'PX', ARGV[7])
if ARGV[10] ~= '' then redis.call('PUBLISH', ARGV[10], ARGV[3]) end
relist(listing(ARGV[11]), ARGV[8], ARGV[2], ARGV[3])
return {1, attempts, redis.call('HGET', KEYS[1], N.errors) or '[]'}
"""

# KEYS[1] job hash, KEYS[2] counters, KEYS[3] deadlines, KEYS[4] the job's queue, KEYS[5] its arq job, KEYS[6] active
# jobs. ARGV[1] names,
# ARGV[2] finished_at JSON, ARGV[3] job id, ARGV[4] arq id, ARGV[5] the job's resource_group as stored (JSON),
# ARGV[6] queued, ARGV[7] running, ARGV[8] cancelled, ARGV[9] the counts, ARGV[10] the job's finished channel,
# ARGV[11] its changed channel ('' none: told `cancelled`, or `running` when a stop was requested), ARGV[12]
# the listing-index JSON ('' none).
# Replies with a `jobstore.CancelOutcome`: queued -> cancelled (told on its finished channel), out of its queue,
# deadlines and arq (1); running ->
# cancel_requested (2); else 0; none -1; or -2 (RECORD_REPLACED) when the record's group is not ARGV[5] (it was replaced
# since it was read: read it again).
REQUEST_CANCEL = "local N = cjson.decode(ARGV[1])" + GROUP_FUNCTIONS + LISTING_FUNCTIONS + """
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
  relist(listing(ARGV[12]), ARGV[3], cur, ARGV[8])
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
# ARGV[9] arq job payload, ARGV[10] its TTL ms, ARGV[11] its queue score (ms), ARGV[12] the listing-index JSON
# ('' : none): {add = {{key, score}, ...}, set = <p>listing-indexes, listed = {keys to add to it}} (`submit_listing`).
# ARGV[13] fair share ('' FIFO: the score is ARGV[11], the submit time; else `FairShare.to_json`: the score is
# `fair_score`'s, `jobqueue.fair_share`). ARGV[14] the channel told of the submission once it is written ('' none:
# <p>events, which wakes the manager and the group's idle consumers), ARGV[15] the message told there.
# Returns {1} created; {0} the id exists already (its record, arq job or arq result); {-1, i, count} the i-th limit
# of ARGV[7] is reached (count unfinished jobs): nothing written.
SUBMIT = FAIR_SCORE_LUA + """
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
if ARGV[12] and ARGV[12] ~= '' then
  local L = cjson.decode(ARGV[12])
  for _, a in ipairs(L.add) do redis.call('ZADD', a[1], a[2], ARGV[3]) end
  if #L.listed > 0 then redis.call('SADD', L.set, unpack(L.listed)) end
end
if #KEYS >= 8 then
  local score = ARGV[11]
  if ARGV[13] and ARGV[13] ~= '' then
    score = string.format('%.17g', fair_score(cjson.decode(ARGV[13]), KEYS[8], tonumber(ARGV[11])))
  end
  redis.call('SET', KEYS[2], ARGV[9], 'PX', ARGV[10])
  redis.call('ZADD', KEYS[8], score, ARGV[8])
end
if (ARGV[14] or '') ~= '' then redis.call('PUBLISH', ARGV[14], ARGV[15]) end
return {1}
"""
SUBMIT_CREATED, SUBMIT_EXISTS, SUBMIT_OVER_QUOTA = 1, 0, -1

# The quota recount (`JobStore.recount_active`): lowers counts of <p>active-jobs that are over what the live records
# say (a record that expired before its job ended is never released). KEYS[1] active jobs, KEYS[2] jobs index.
# ARGV[1] names; ARGV[2] the final states, comma-separated; ARGV[3], ARGV[4] the text around a job id in its key;
# ARGV[5] the index score (submitted ms) from which every job is rechecked here besides the candidates; ARGV[6] JSON
# list of {field, kind (`ActiveJobsField`: the job field holding the name), name, [candidate job ids]}. A field
# becomes the number of its candidates and recent jobs that are unfinished now (a sharded query's parent: never),
# when that is lower (0: removed);
# being one script, no submit or final transition comes between the check and the write. Returns JSON
# [[field, before, after], ...] of the fields lowered.
RECOUNT_ACTIVE = """
local N = cjson.decode(ARGV[1])
local final = {}
for s in string.gmatch(ARGV[2], '[^,]+') do final[s] = true end
local cache = {}
local function unfinished(id)  -- {owner = , team = } of a live unfinished job, else false
  if cache[id] == nil then
    local key = ARGV[3] .. id .. ARGV[4]
    local status = redis.call('HGET', key, N.status)
    local shards = redis.call('HGET', key, N.shard_ids)  -- a sharded query's parent counts in no quota (its
    local parent = shards and #cjson.decode(shards) > 0   -- shards do), whatever its stored status
    if not status or final[status] or parent then cache[id] = false
    else
      local who = {}
      for _, kind in ipairs({'owner', 'team'}) do
        local raw = redis.call('HGET', key, N[kind])
        local name = raw and cjson.decode(raw)
        if type(name) == 'string' then who[kind] = name end
      end
      cache[id] = who
    end
  end
  return cache[id]
end
local wanted = cjson.decode(ARGV[6])
local recent = redis.call('ZRANGEBYSCORE', KEYS[2], ARGV[5], '+inf')
local changed = {}
for _, w in ipairs(wanted) do
  local seen, n = {}, 0
  for _, list in ipairs({w[4], recent}) do
    for _, id in ipairs(list) do
      if not seen[id] then
        seen[id] = true
        local who = unfinished(id)
        if who and who[w[2]] == w[3] then n = n + 1 end
      end
    end
  end
  local before = tonumber(redis.call('HGET', KEYS[1], w[1]) or '0')
  if n < before then
    if n > 0 then redis.call('HSET', KEYS[1], w[1], n) else redis.call('HDEL', KEYS[1], w[1]) end
    table.insert(changed, {w[1], before, n})
  end
end
if #changed == 0 then return '[]' end
return cjson.encode(changed)
"""

# Index one job that is already there (the manager's backfill of jobs written before the listing indexes, or by an
# older writer): KEYS[1] job hash. ARGV[1] names, ARGV[2] job id, ARGV[3] the listing-index JSON of `SUBMIT` (its
# `add` without the state index), ARGV[4] {status -> state index key} JSON, ARGV[5] submission ms. The job's state
# index is the one of its status as read here, and it is taken out of every other: one script, so no transition
# can slip between reading the status and indexing it. Returns 1 indexed, 0 no record.
INDEX_JOB = """
local N = cjson.decode(ARGV[1])
local cur = redis.call('HGET', KEYS[1], N.status)
if not cur then return 0 end
local L = cjson.decode(ARGV[3])
for _, a in ipairs(L.add) do redis.call('ZADD', a[1], a[2], ARGV[2]) end
if #L.listed > 0 then redis.call('SADD', L.set, unpack(L.listed)) end
for status, key in pairs(cjson.decode(ARGV[4])) do
  if status == cur then redis.call('ZADD', key, ARGV[5], ARGV[2]) else redis.call('ZREM', key, ARGV[2]) end
end
return 1
"""

# Forget a listing index once it is empty: KEYS[1] <p>listing-indexes, KEYS[2] the index. Checked and removed in one
# script, so a submit adding to the index meanwhile keeps it listed. Returns 1 when it was forgotten.
FORGET_EMPTY_INDEX = """
if redis.call('ZCARD', KEYS[2]) > 0 then return 0 end
return redis.call('SREM', KEYS[1], KEYS[2])
"""

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

# A shard of a sharded query ended: tell its parent's waiters, and (once per shard) make the first held sibling due.
# Shards past the parent's num_workers are submitted held (queue score `HELD_SCORE_MS`, never due); each shard's end
# releases one, so at most num_workers of them are ever due or running, whichever consumers take them.
# KEYS[1] the group's queue, KEYS[2] the parent's shard-released set. ARGV[1] the shard's job id, ARGV[2] JSON list of
# the siblings' arq ids in shard order, ARGV[3] the held score, ARGV[4] now (ms), ARGV[5] the parent's finished
# channel, ARGV[6] the set's TTL seconds. Returns the arq id released, or false.
RELEASE_SHARD = """
redis.call('PUBLISH', ARGV[5], 'shard')
if redis.call('SADD', KEYS[2], ARGV[1]) == 0 then return false end
redis.call('EXPIRE', KEYS[2], ARGV[6])
for _, member in ipairs(cjson.decode(ARGV[2])) do
  local score = redis.call('ZSCORE', KEYS[1], member)
  if score and tonumber(score) >= tonumber(ARGV[3]) then
    redis.call('ZADD', KEYS[1], ARGV[4], member)
    return member
  end
end
return false
"""
HELD_SCORE_MS = 253_402_214_400_000  # 9999-12-31T00:00Z: never due, yet a valid time (`jobqueue.entries`)
