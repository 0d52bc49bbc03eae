"""Fair share inside a resource group, priorities, and per-team running limits. Pure: no I/O.

**Fair share** is start-time fair queuing over arq's sorted set, computed atomically in the submit script, so the
take order stays arq's own (consumers take the lowest score that is due):

    virtual time V  = the lowest score of the group's waiting jobs (due, of this environment, not running),
                      or now when none waits
    score           = max(the owner's virtual finish time in the group + cost / weight, V - lead)
    owner's finish  = score                          (<p>fair-finish:<group>, `Keys.fair_finish`)

that is, an owner's next job is its last one plus cost / weight; an owner with nothing waiting restarts at the
virtual time, just ahead of the head (`NEWCOMER_LEAD_MS`, less than any job's cost / weight: it passes the head
and nothing else), as start-time fair queuing restarts an idle flow at the start tag of the job in service.

The cost of a job is one unit (`JOB_COST_MS`: 1 ms of virtual time at weight 1), whatever its input rows: shards
of one query each cost one unit of their owner's share. The weight is the priority's (`PRIORITY_WEIGHTS`: high 4,
normal 2, low 1) times the team's (JOBQUEUE_TEAM_WEIGHTS, 1 when not named, at most 100). So an owner with 200
queued jobs has scores V, V+0.5, ... V+99.5 ms, and a new owner's jobs score V-lead, V+0.5-lead, ...: its first is
taken next, however long the backlog, and the two then alternate. Priorities weight the share; they never jump the
whole queue. (Owners that all start while the same job heads the queue take their first turns newest first.)

The score never exceeds now (a score above now is arq's "deferred"): an owner who queues faster than 1 job per
`cost / weight` ms of the clock keeps its own order by its submit times. Deferred retries keep arq's rule (now +
backoff), behind the waiting jobs, as they are under FIFO. A score outside [now - `HORIZON_MS`, now], or a member
of another environment (what a hostile writer plants, such as `-inf`), never becomes the virtual time; a finish
time that is not a number within the horizon is ignored. JOBQUEUE_FAIR_SHARE=false: the score is the submit time
(FIFO).

**Team limits** (JOBQUEUE_QUOTA_MAX_RUNNING_PER_TEAM, per team `max_running` in JOBQUEUE_QUOTA_TEAM_OVERRIDES): a
consumer's take skips a job whose team already runs its limit in the group (it stays queued with its score), and
the claim counts again atomically, so no race of consumers ever runs more.

`FAIR_SCORE_LUA` and `TEAM_LIMIT_LUA` are the same rules in the scripts; `fair_score`/`virtual_time` mirror them
(tests check they agree).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from jobqueue.models import Priority
from jobqueue.quotas import OVERRIDES_SETTING

if TYPE_CHECKING:
    from jobqueue.keys import Keys
    from jobqueue.settings import Settings

PRIORITY_WEIGHTS = {Priority.HIGH: 4.0, Priority.NORMAL: 2.0, Priority.LOW: 1.0}
JOB_COST_MS = 1.0  # one job, at weight 1, in ms of virtual time
MAX_WEIGHT = 4 * 100  # the high priority's weight times the most a team may weigh (JOBQUEUE_TEAM_WEIGHTS)
NEWCOMER_LEAD_MS = JOB_COST_MS / MAX_WEIGHT / 2  # an idle owner restarts this much ahead of the queue's head
HORIZON_MS = 86_400_000  # a day: older scores are not the virtual time; <p>fair-finish:<group> expires after it
MAX_OWNERS = 10_000  # past this many owners in a group's finish times, those behind the virtual time are dropped
LIMIT_SETTING = "JOBQUEUE_QUOTA_MAX_RUNNING_PER_TEAM"


def weight(settings: Settings, priority: Priority, team: str | None) -> float:
    """A job's share of its group: its priority's weight times its team's."""
    return PRIORITY_WEIGHTS[priority] * (settings.team_weights.get(team, 1.0) if team else 1.0)


def virtual_time(entries: Iterable[tuple[str, float]], running: Iterable[str], prefix: str, now: float) -> float:
    """The group's virtual time: the lowest score among `entries` (a queue's (member, score), lowest first) that is
    in [now - HORIZON_MS, now], of this environment (`prefix`) and not running; `now` when there is none."""
    busy = {prefix + job_id for job_id in running}
    low = max(0.0, now - HORIZON_MS)
    for member, score in entries:
        if low <= score <= now and member not in busy and member.startswith(prefix):
            return score
    return now


def fair_score(virtual: float, owner_finish: float | None, step: float, now: float) -> tuple[float, float]:
    """(the queue score, the owner's new finish time) of a new job: `step` is cost / weight (ms)."""
    finish = virtual - NEWCOMER_LEAD_MS
    if owner_finish is not None and math.isfinite(owner_finish) and owner_finish < now + HORIZON_MS:
        finish = max(finish, owner_finish + step)
    return min(finish, now), finish


@dataclass(frozen=True)
class FairShare:
    """What the submit script needs to score one job fairly (ARGV[13] as JSON)."""

    owner: str
    step: float  # cost / weight, ms

    @classmethod
    def of(cls, settings: Settings, owner: str | None, team: str | None, priority: Priority) -> FairShare | None:
        """None with JOBQUEUE_FAIR_SHARE off (FIFO)."""
        if not settings.fair_share:
            return None
        return cls(owner or "", JOB_COST_MS / weight(settings, priority, team))

    def to_json(self, keys: Keys, group: str) -> str:
        return json.dumps({"finish": keys.fair_finish(group), "running": keys.running(group), "prefix": keys.prefix,
                           "owner": self.owner, "step": self.step, "lead": NEWCOMER_LEAD_MS, "horizon": HORIZON_MS,
                           "max_owners": MAX_OWNERS})


def team_running_limit(settings: Settings, team: str | None) -> tuple[int, str]:
    """The most jobs of `team` that may run at once in a group (0: no limit), and where it is set."""
    if not team:
        return 0, LIMIT_SETTING
    override = settings.quota_team_overrides.get(team)
    if override is not None and override.max_running is not None:
        return override.max_running, f'{OVERRIDES_SETTING}["{team}"].max_running'
    return settings.quota_max_running_per_team, LIMIT_SETTING


def limits_json(settings: Settings) -> str:
    """Every team's running limit, as the scripts read it: '' when no team has one."""
    teams = {t: o.max_running for t, o in settings.quota_team_overrides.items() if o.max_running is not None}
    if settings.quota_max_running_per_team == 0 and not any(teams.values()):
        return ""
    return json.dumps({"default": settings.quota_max_running_per_team, "teams": teams})


def team_limit_message(team: str, limit: int, setting: str) -> str:
    """The wait reason of a job whose team runs its limit."""
    return (f"waiting: team {team} at its limit of {limit} running (in this group; {setting}); it starts when one "
            "of the team's jobs ends")


# In the submit script: `fair_score(f, queue, now)` with f = FairShare.to_json decoded; returns the queue score and
# records the owner's finish time. Numbers are written with %.17g (Lua's own tostring keeps 14 digits: not a ms).
FAIR_SCORE_LUA = """
local function fair_score(f, queue, now)
  local low = math.max(0, now - f.horizon)
  local busy, running = {}, redis.call('HKEYS', f.running)
  for _, id in ipairs(running) do busy[f.prefix .. id] = true end
  local v = now
  local head = redis.call('ZRANGEBYSCORE', queue, low, now, 'WITHSCORES', 'LIMIT', 0, #running + 16)
  for j = 1, #head, 2 do
    if not busy[head[j]] and string.sub(head[j], 1, #f.prefix) == f.prefix then v = tonumber(head[j + 1]); break end
  end
  local finish = v - f.lead
  local known = tonumber(redis.call('HGET', f.finish, f.owner) or '')
  if known and known == known and known > -math.huge and known < now + f.horizon then
    finish = math.max(finish, known + f.step)
  end
  redis.call('HSET', f.finish, f.owner, string.format('%.17g', finish))
  redis.call('PEXPIRE', f.finish, f.horizon)
  if redis.call('HLEN', f.finish) > f.max_owners then
    local all = redis.call('HGETALL', f.finish)
    for j = 1, #all, 2 do
      local t = tonumber(all[j + 1])
      if not t or not (t >= v) then redis.call('HDEL', f.finish, all[j]) end
    end
  end
  return math.min(finish, now)
end
"""

# `team_limit(limits, team)`: the most jobs of `team` that may run at once in a group (nil: no limit).
# `team_running(limits, running, job_head, job_tail, team_field, job_id, team)`: nil when `team` may start one more
# job in the group, else how many of its jobs run there (the running hash `running`, job keys head .. id .. tail,
# each job's team as stored JSON in `team_field`; `job_id` itself is not counted). `limits`: `limits_json` decoded.
TEAM_LIMIT_OF_LUA = """
local function team_limit(limits, team)
  local limit = limits.teams[team] or limits.default
  if type(limit) ~= 'number' or limit <= 0 then return nil end
  return limit
end
-- the team of job `id` (its key: job_head .. id .. job_tail), nil when it has none or the field is not a team
local function team_of_job(job_head, job_tail, team_field, id)
  local ok, team = pcall(cjson.decode, redis.call('HGET', job_head .. id .. job_tail, team_field) or 'null')
  if ok and type(team) == 'string' and team ~= '' then return team end
  return nil
end
"""
TEAM_LIMIT_LUA = TEAM_LIMIT_OF_LUA + """
local function team_running(limits, running, job_head, job_tail, team_field, job_id, team)
  local limit = team_limit(limits, team)
  if not limit then return nil end
  local n = 0
  for _, id in ipairs(redis.call('HKEYS', running)) do
    if id ~= job_id then
      local ok, other = pcall(cjson.decode, redis.call('HGET', job_head .. id .. job_tail, team_field) or 'null')
      if ok and other == team then n = n + 1 end
    end
  end
  if n >= limit then return n end
  return nil
end
"""
