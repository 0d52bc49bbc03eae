"""The Redis layout: every key jobqueue reads or writes, in one place. Pure, no I/O.

All keys live under `jobqueue:<environment>:` so environments can share one Redis.

    <p>queue:<group>            arq queue (zset arq id -> score ms); ready when score <= now,
                                deferred when score > now. Running jobs stay in it until done.
    <p>running:<group>          hash job_id -> consumer_id of jobs a consumer is executing (in flight)
    <p>consumers:<group>        hash consumer_id -> JSON ConsumerInfo (presence + busy jobs)
    <p>job:<id>                 hash: one job's record (status, request, summary, error, result)
    <p>heartbeat:<id>           string with a short TTL, renewed by the consumer running the job;
                                when it expires while the job is running, the reaper re-queues it
    <p>oom-kill:<consumer_id>   string, JSON of the consumer's last OOM kill (limit, time, kill id), kept an
                                hour: the reaper names it in the error of the jobs that consumer lost
    <p>deadlines                zset job_id -> completion deadline ms (jobs that have one)
    <p>jobs                     zset job_id -> submit ms, for listing recent jobs
    <p>group-states             hash group -> JSON of the manager's last decision (`jobqueue status`)
    <p>manager                  hash: `tick_at`, the leader's last tick (epoch seconds)
    <p>groups                   hash group -> JSON config, published by the manager for SDKs
    <p>counters                 hash `<event>:<group>` -> count (enqueued, started, succeeded, failed,
                                retried, cancelled, expired, spilled_bytes, oom_kills): exported by the manager
    <p>schedules                hash name -> JSON definition, published by the manager (+ `!errors`)
    <p>schedule:<name>          hash: checkpoint, paused, run_requested, last_job, last_due, last_reason
    <p>schedule-runs:<name>     zset job_id -> due ms: the runs of one schedule
    <p>events                   pub/sub channel: `submitted:<group>` wakes the manager early

arq keeps its own per-job keys (`arq:job:<arq id>`, `arq:in-progress:<arq id>`, `arq:retry:<arq id>`,
`arq:result:<arq id>`), outside our prefix. So that environments sharing a Redis never share them, arq
knows a job by its *arq id*, `<p><job id>` (`Keys.arq_id`): that is the queue member too, and a consumer
maps it back with `Keys.job_id_of` (a member without this environment's prefix is not a job of it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from arq.constants import in_progress_key_prefix, job_key_prefix, result_key_prefix, retry_key_prefix

ARQ_FUNCTION = "run_offline_query"
SCHEDULE_ERRORS_FIELD = "!errors"  # in <p>schedules: the load errors, as a JSON list


class _Fixed:
    """A key with no variable part: `keys.counters` is `<prefix>counters`."""

    def __init__(self, suffix: str) -> None:
        self.suffix = suffix

    def __get__(self, keys: Keys, owner: type[Keys]) -> str:
        return keys.prefix + self.suffix


class _Named:
    """One key per name (a group, a job id, ...): `keys.queue("default")` is `<prefix>queue:default`."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __get__(self, keys: Keys, owner: type[Keys]) -> Callable[[str], str]:
        prefix = f"{keys.prefix}{self.kind}:"

        def key(name: str) -> str:
            return prefix + name

        return key


@dataclass(frozen=True)
class Keys:
    """Key builder for one environment."""

    prefix: str

    @classmethod
    def for_environment(cls, environment: str) -> Keys:
        return cls(prefix=f"jobqueue:{environment}:")

    def arq_id(self, job_id: str) -> str:
        """The id arq knows a job by: its queue member, and the suffix of arq's per-job keys."""
        return f"{self.prefix}{job_id}"

    def job_id_of(self, arq_id: str) -> str | None:
        """The job id behind a queue member of this environment; None when the member is not one."""
        if arq_id.startswith(self.prefix) and len(arq_id) > len(self.prefix):
            return arq_id[len(self.prefix):]
        return None

    def arq_job(self, job_id: str) -> str:
        return job_key_prefix + self.arq_id(job_id)

    def arq_in_progress(self, job_id: str) -> str:
        return in_progress_key_prefix + self.arq_id(job_id)

    def arq_retry(self, job_id: str) -> str:
        return retry_key_prefix + self.arq_id(job_id)

    def arq_result(self, job_id: str) -> str:
        return result_key_prefix + self.arq_id(job_id)

    # one key per group, job id, consumer id or schedule name
    queue = _Named("queue")  # per group
    running = _Named("running")  # per group
    consumers = _Named("consumers")  # per group
    job = _Named("job")  # per job id
    heartbeat = _Named("heartbeat")  # per job id
    oom_kill = _Named("oom-kill")  # per consumer id
    schedule = _Named("schedule")  # per schedule name
    schedule_runs = _Named("schedule-runs")  # per schedule name

    # keys without a variable part
    deadlines = _Fixed("deadlines")  # zset: job id -> completion deadline (ms)
    jobs_index = _Fixed("jobs")  # zset: job id -> submission time (ms)
    group_states = _Fixed("group-states")  # hash: group -> JSON of the manager's last decision (when it changes)
    manager_state = _Fixed("manager")  # hash: `tick_at` (epoch seconds of the leader's last tick)
    groups = _Fixed("groups")
    counters = _Fixed("counters")
    schedules = _Fixed("schedules")
    events = _Fixed("events")
