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

from dataclasses import dataclass

from arq.constants import in_progress_key_prefix, job_key_prefix, result_key_prefix, retry_key_prefix

ARQ_FUNCTION = "run_offline_query"
SCHEDULE_ERRORS_FIELD = "!errors"  # in <p>schedules: the load errors, as a JSON list


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

    def queue(self, group: str) -> str:
        return f"{self.prefix}queue:{group}"

    def running(self, group: str) -> str:
        return f"{self.prefix}running:{group}"

    def consumers(self, group: str) -> str:
        return f"{self.prefix}consumers:{group}"

    def job(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    def heartbeat(self, job_id: str) -> str:
        return f"{self.prefix}heartbeat:{job_id}"

    def oom_kill(self, consumer_id: str) -> str:
        return f"{self.prefix}oom-kill:{consumer_id}"

    @property
    def deadlines(self) -> str:
        return f"{self.prefix}deadlines"

    @property
    def jobs_index(self) -> str:
        return f"{self.prefix}jobs"

    @property
    def group_states(self) -> str:
        """Hash: group -> JSON of the manager's last decision (written when it changes)."""
        return f"{self.prefix}group-states"

    @property
    def manager_state(self) -> str:
        """Hash: `tick_at` (epoch seconds of the leader's last tick)."""
        return f"{self.prefix}manager"

    @property
    def groups(self) -> str:
        return f"{self.prefix}groups"

    @property
    def counters(self) -> str:
        return f"{self.prefix}counters"

    @property
    def schedules(self) -> str:
        return f"{self.prefix}schedules"

    def schedule(self, name: str) -> str:
        return f"{self.prefix}schedule:{name}"

    def schedule_runs(self, name: str) -> str:
        return f"{self.prefix}schedule-runs:{name}"

    @property
    def events(self) -> str:
        return f"{self.prefix}events"
