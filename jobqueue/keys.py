"""The Redis layout: every key jobqueue reads or writes, in one place. Pure, no I/O.

All keys live under `jobqueue:<environment>:` so environments can share one Redis.

    <p>queue:<group>            arq queue (zset arq id -> score ms); ready when score <= now,
                                deferred when score > now. Running jobs stay in it until done.
    <p>running:<group>          hash job_id -> consumer_id of jobs a consumer is executing (in flight)
    <p>consumers:<group>        hash consumer_id -> JSON ConsumerInfo (presence + busy jobs)
    <p>job:<id>                 hash: one job's record (status, request, summary, error, result): `JobField`
    <p>heartbeat:<id>           string with a short TTL, renewed by the consumer running the job;
                                when it expires while the job is running, the reaper re-queues it
    <p>oom-kill:<consumer_id>   string, JSON of the consumer's last OOM kill (limit, time, kill id), kept an
                                hour: the reaper names it in the error of the jobs that consumer lost
    <p>deadlines                zset job_id -> completion deadline ms (jobs that have one)
    <p>jobs                     zset job_id -> submit ms, for listing recent jobs
    <p>jobs-by:<kind>:<value>   zset job_id -> submit ms per value of `ListingIndex` (owner, team, group, query, tag
                                `<name>=<value>`, state, a shard's parent; `kind:shard`: every shard of a sharded
                                query); <p>jobs-by-wait, <p>jobs-by-duration: job_id -> ms;
                                <p>listing-indexes: set of the jobs-by keys (the garbage collector walks them)
    <p>group-states             hash group -> JSON `GroupState` of the manager's last decision (`jobqueue status`)
    <p>group-history:<group>    zset: a `GroupSample` (`to_member`: its counts as text) -> its interval's start
                                (epoch seconds): the group's queue and consumers over the last hour, one sample per
                                JOBQUEUE_GROUP_HISTORY_SECONDS (the peaks within it), written by the manager
                                (`manager.group_history`); the console's sparklines
    <p>oidc-login:<h>           string: JSON of one browser's OIDC sign-in under way (PKCE verifier, nonce, where to
                                go), <h> the SHA-256 of its `state`; taken once by the callback, TTL 10 minutes
    <p>oidc-logins              zset <h> -> expiry ms of every OIDC sign-in under way: caps them at
                                JOBQUEUE_CONSOLE_MAX_PENDING_SIGNINS (anyone may start one, unauthenticated, so
                                their memory in Redis is bounded); entries expire by score
    <p>manager                  hash: `tick_at` (`MANAGER_TICK_AT`), the leader's last tick (epoch seconds)
    <p>groups                   hash group -> JSON config, published by the manager for SDKs
    <p>counters                 hash `<counter>:<group>` -> count (`CounterName`: enqueued, started, succeeded, failed,
                                retried, cancelled, expired, spilled_bytes, scan_cache_*, oom_kills) and
                                `hist:<name>:<group>:<le>|sum` (`HistogramName`): exported by the manager;
                                and `team:<event>:<team>` (`TeamCounterName`): jobs per team (submitted, outcomes)
    <p>active-jobs              hash `owner:<owner>` / `team:<team>` (`ActiveJobsField`) -> that owner's or team's
                                unfinished (queued or running) jobs: the queued-jobs quotas (`jobqueue.quotas`);
                                +1 at submit, -1 at the job's final transition, a field at 0 is removed
    <p>fair-finish:<group>      hash owner -> the virtual finish time (ms, float text) of the owner's last job queued in
                                the group: the fair-share queue score (`jobqueue.fair_share`), written by the submit
                                script alone; expires a day after its last write, and owners behind the group's
                                virtual time are dropped once it holds over 10,000
    <p>schedules                hash name -> JSON definition, published by the manager (+ `!errors`)
    <p>schedule:<name>          hash: `ScheduleField` (checkpoint, paused, run_requested, last_job, last_due,
                                last_reason)
    <p>schedule-runs:<name>     zset job_id -> due ms: the runs of one schedule
    <p>tokens                   zset token id -> created ms: every API token (`jobqueue.auth.tokens`)
    <p>token:<id>               hash: one API token (`TokenField`): the SHA-256 of the token, never the token
    <p>console-session:<h>      hash: one web console sign-in (`ConsoleSessionField`), <h> the SHA-256 of the
                                session cookie (the cookie is not stored); TTL JOBQUEUE_CONSOLE_SESSION_SECONDS
    <p>registry-versions        hash version number -> JSON `RegistryVersion` (jobqueue.registry_versions): every
                                applied feature registry, immutable, never expired
    <p>registry-current         string: the id (`<number>-<hash>`) of the version the SDK plans new jobs against
    <p>events                   pub/sub channel: `submitted:<group>` (`submitted_event`) wakes the manager early,
                                and the idle consumers of that group
    <p>finished:<id>            pub/sub channel: the job's new status, published by the transition that made it
                                final (`JobStore`), in the same script; `wait()` blocks on it. A sharded query's
                                parent is told `shard` each time one of its shards ends
    <p>shard-released:<id>      set, per sharded query's parent: the shards whose end has released a held sibling
                                (each releases one, once: `jobqueue.shard_store`); TTL of the job records
    <p>changed:<id>             pub/sub channel: the job's new status at every transition, claim and cancel request
                                (`JobStore`, in the same script): the console's live job page follows it
    <p>console-live:<h>         zset: stream id -> expiry ms of each open live stream (SSE) of one console session
                                (<h> as in console-session): caps the streams per session; entries expire by score
    <p>upload:<ref>             string: JSON of one staged upload (`jobqueue.upload_store`), taken once by its submit;
                                TTL JOBQUEUE_API_UPLOAD_TTL_SECONDS
    <p>uploads-of:<owner>       zset ref -> expiry ms of an owner's upload references not yet taken: caps them at
                                JOBQUEUE_QUOTA_MAX_PENDING_UPLOADS_PER_OWNER; entries expire by score

arq keeps its own per-job keys (`arq:job:<arq id>`, `arq:in-progress:<arq id>`, `arq:retry:<arq id>`,
`arq:result:<arq id>`), outside our prefix. So that environments sharing a Redis never share them, arq
knows a job by its *arq id*, `<p><job id>` (`Keys.arq_id`): that is the queue member too, and a consumer
maps it back with `Keys.job_id_of` (a member without this environment's prefix is not a job of it).

Field names, counter names and the group-state record are declared here too, so that a Lua script,
the manager's metrics and the CLI cannot disagree about them: scripts receive every key and field name
as an argument (`around` splits a key or field built with `SLOT` for a script that fills in a group).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

from arq.constants import in_progress_key_prefix, job_key_prefix, result_key_prefix, retry_key_prefix

from jobqueue.models import JobStatus

ARQ_FUNCTION = "run_offline_query"
SCHEDULE_ERRORS_FIELD = "!errors"  # in <p>schedules: the load errors, as a JSON list
MANAGER_TICK_AT = "tick_at"  # in <p>manager: epoch seconds of the leader's last tick
TRUE, FALSE = "true", "false"  # flag values of <p>schedule:<name> `paused`
SLOT = "\x00"  # stands for the variable part of a key or field a script completes (never in a name)


def around(template: str) -> tuple[str, str]:
    """A key or field built with `SLOT` for its variable part, as the text before and after it: a script
    rebuilds the name as `head .. part .. tail`, so the format stays declared here."""
    head, slot, tail = template.partition(SLOT)
    if not slot:
        raise ValueError(f"{template!r} has no slot")
    return head, tail


def submitted_event(group: str) -> str:
    """The message on <p>events that announces a submission to `group`."""
    return f"submitted:{group}"


class JobField(enum.StrEnum):
    """The fields of <p>job:<id>: `status` is plain text, `attempts` a plain integer (HINCRBY), the rest JSON."""

    STATUS = "status"
    RESOURCE_GROUP = "resource_group"
    OUTPUT = "output"
    INPUT_ROWS = "input_rows"
    SUBMITTED_AT = "submitted_at"
    STARTED_AT = "started_at"
    FINISHED_AT = "finished_at"
    CONSUMER_ID = "consumer_id"
    PROGRESS = "progress"
    ATTEMPTS = "attempts"
    MAX_RETRIES = "max_retries"
    COMPLETION_DEADLINE = "completion_deadline"
    CANCEL_REQUESTED = "cancel_requested"
    ERRORS = "errors"
    ERROR = "error"
    RESULT_URI = "result_uri"
    SUMMARY = "summary"
    OWNER = "owner"
    TEAM = "team"
    TAGS = "tags"
    QUERY_NAME = "query_name"
    CORRELATION_ID = "correlation_id"
    REGISTRY_VERSION = "registry_version"
    ATTEMPT_STARTS = "attempt_starts"  # JSON list of ISO times, one per claim (CLAIM appends)
    ATTEMPT_ENDS = "attempt_ends"  # JSON list of ISO times, one per attempt that ended (TRANSITION from a claim)
    PRIORITY = "priority"
    SHARD_IDS = "shard_ids"  # a sharded query's parent: its shards' job ids, in shard order (`jobqueue.sharding`)
    PARENT_ID = "parent_id"  # a shard: its parent's job id
    NUM_WORKERS = "num_workers"  # a parent: at most this many of its shards run at once (null: no cap)


JOB_JSON_FIELDS = tuple(f.value for f in JobField if f is not JobField.STATUS)


class ListingIndex(enum.StrEnum):
    """The kinds of <p>jobs-by:<kind>:<value> (`jobqueue.listing_index`); only `JobStore` writes them."""

    OWNER, TEAM, GROUP, QUERY, TAG, STATE = "owner", "team", "group", "query", "tag", "state"
    PARENT = "parent"  # a sharded query's parent id: its shards
    KIND = "kind"  # `SHARD_KIND`: every shard (a listing leaves them out unless asked)


SHARD_KIND = "shard"  # the value of `ListingIndex.KIND` whose index holds every shard


def tag_value(name: str, value: str) -> str:
    """The value of a tag's listing index: `<name>=<value>`."""
    return f"{name}={value}"


class ScheduleField(enum.StrEnum):
    """The fields of <p>schedule:<name>: written by the manager's scheduler and the `jobqueue schedules` CLI."""

    CHECKPOINT = "checkpoint"  # ISO time the scheduler last evaluated the schedule
    PAUSED = "paused"  # TRUE or FALSE
    RUN_REQUESTED = "run_requested"  # ISO time of a "run now" request, until the manager takes it
    LAST_JOB = "last_job"
    LAST_DUE = "last_due"
    LAST_REASON = "last_reason"


class TokenField(enum.StrEnum):
    """The fields of <p>token:<id>, written by `jobqueue.auth.tokens.TokenStore` alone. Times are ISO 8601 text."""

    SHA256 = "sha256"  # hex SHA-256 of the whole token: the token itself is never stored
    OWNER = "owner"
    TEAM = "team"
    ROLE = "role"
    CREATED_AT = "created_at"
    EXPIRES_AT = "expires_at"  # absent: never expires
    REVOKED_AT = "revoked_at"  # absent: not revoked
    LAST_USED_AT = "last_used_at"  # absent: never used (updated at most once a minute)


class ConsoleSessionField(enum.StrEnum):
    """The fields of <p>console-session:<h>, written by `jobqueue.console.sessions.SessionStore` alone."""

    OWNER = "owner"
    TEAM = "team"  # absent: none
    ROLE = "role"
    TOKEN_ID = "token_id"  # the `jq_` token signed in with (re-checked on each page); absent for an OIDC JWT
    CSRF = "csrf"  # the per-session token every mutating form carries


class CounterName(enum.StrEnum):
    """The job counters in <p>counters, one field per group: `<counter>:<group>`. Only `JobStore` writes them,
    and the manager exports every one (`manager.metrics`)."""

    ENQUEUED = "enqueued"
    STARTED = "started"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RETRIED = "retried"  # running -> queued
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    SPILLED_BYTES = "spilled_bytes"
    SCAN_CACHE_BYTES_CACHE = "scan_cache_bytes_cache"
    SCAN_CACHE_BYTES_REMOTE = "scan_cache_bytes_remote"
    SCAN_CACHE_EVICTIONS = "scan_cache_evictions"
    SCAN_CACHE_HITS = "scan_cache_hits"
    SCAN_CACHE_MISSES = "scan_cache_misses"
    OOM_KILLS = "oom_kills"

    def field(self, group: str) -> str:
        return f"{self.value}:{group}"


TEAM_COUNTER_PREFIX = "team"


class TeamCounterName(enum.StrEnum):
    """Per-team job counters in <p>counters: `team:<event>:<team>`, only for jobs that have a team. Only `JobStore`
    writes them; the manager exports them with a bounded `team` label (`manager.metrics`)."""

    SUBMITTED = "submitted"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    def field(self, team: str) -> str:
        return f"{TEAM_COUNTER_PREFIX}:{self.value}:{team}"


class ActiveJobsField(enum.StrEnum):
    """The fields of <p>active-jobs: `<kind>:<name>`, one per owner and per team with unfinished jobs. Only `JobStore`
    writes them, in the submit script and the final transitions' scripts."""

    OWNER = "owner"
    TEAM = "team"

    def field(self, name: str) -> str:
        return f"{self.value}:{name}"


SECONDS_BUCKETS = (0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 10800)
BYTES_BUCKETS = (0, 1 << 20, 16 << 20, 128 << 20, 1 << 30, 8 << 30, 64 << 30)
HISTOGRAM_FIELD_PREFIX = "hist"


class HistogramName(enum.StrEnum):
    """Histograms kept in <p>counters as cumulative bucket counters: `hist:<name>:<group>:<le>`, `+Inf` and `sum`."""

    JOB_QUEUE_WAIT_SECONDS = "job_queue_wait_seconds"
    JOB_RUN_SECONDS = "job_run_seconds"  # succeeded jobs
    JOB_FAILED_RUN_SECONDS = "job_failed_run_seconds"  # failed jobs that ran: exported as job_run_seconds{outcome}
    JOB_SPILLED_BYTES = "job_spilled_bytes"

    @property
    def buckets(self) -> tuple[float, ...]:
        """The finite bucket upper bounds; a bound's field is `str(bound)`."""
        return BYTES_BUCKETS if self is HistogramName.JOB_SPILLED_BYTES else SECONDS_BUCKETS

    def field(self, group: str, le: str) -> str:
        """`le`: a bound as `str(bound)`, `+Inf`, or `sum`."""
        return f"{HISTOGRAM_FIELD_PREFIX}:{self.value}:{group}:{le}"


@dataclass(frozen=True)
class CounterField:
    counter: CounterName
    group: str


@dataclass(frozen=True)
class HistogramField:
    histogram: HistogramName
    group: str
    le: str  # a bound, `+Inf` or `sum`


@dataclass(frozen=True)
class TeamCounterField:
    counter: TeamCounterName
    team: str


def parse_counter_field(name: str) -> CounterField | HistogramField | TeamCounterField | None:
    """What a field of <p>counters counts; None for a field no one declared."""
    head, _, rest = name.partition(":")
    if head == TEAM_COUNTER_PREFIX:
        event, _, team = rest.partition(":")
        if event in TeamCounterName.__members__.values() and team:
            return TeamCounterField(TeamCounterName(event), team)
        return None
    if head == HISTOGRAM_FIELD_PREFIX:
        hist, _, rest = rest.partition(":")
        group, _, le = rest.rpartition(":")
        if hist in HistogramName.__members__.values() and group:
            return HistogramField(HistogramName(hist), group, le)
        return None
    if head in CounterName.__members__.values():
        return CounterField(CounterName(head), rest)
    return None


@dataclass(frozen=True)
class GroupState:
    """One group's state as the manager last decided it: the JSON value of <p>group-states (`jobqueue status`).
    The field names are the JSON names."""

    current: int = 0
    desired: int = 0
    direction: str = "none"
    reason: str = ""
    detail: str = ""
    ready: int = 0
    in_flight: int = 0
    deferred: int = 0
    held: int = 0  # due jobs whose team runs its limit in the group: not ready (`manager.observe`)
    busy: int = 0
    orphaned: int = 0
    oldest_ready_at: float | None = None  # epoch seconds
    error: str | None = None
    configured: bool = True
    live: int = 0
    start_trouble: str | None = None
    starting_since: float | None = None  # epoch seconds since which fewer consumers are live than desired

    scaled_at: float | None = None  # epoch seconds of the last decision that changed the consumer count
    scaled_from: int | None = None  # the count before it
    scaled_to: int | None = None  # the count it asked for
    scaled_reason: str = ""  # its reason code and detail
    scaled_detail: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: str | bytes) -> GroupState:
        """A published state; fields this version does not know are ignored, missing ones take their default."""
        data: dict[str, Any] = json.loads(raw)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


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

    @staticmethod
    def arq_in_progress_of(member: str) -> str:
        """arq's in-progress lock (the take's) of a queue member, whoever's member it is."""
        return in_progress_key_prefix + member

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
    token = _Named("token")  # per API token id
    console_session = _Named("console-session")  # per SHA-256 of a console session cookie
    group_history = _Named("group-history")  # per group: zset of samples (the console's sparklines)
    oidc_login = _Named("oidc-login")  # per SHA-256 of an OIDC sign-in's `state`
    fair_finish = _Named("fair-finish")  # per group: owner -> virtual finish time (ms), the fair-share score
    job_finished = _Named("finished")  # pub/sub channel per job id: its final status, once
    job_changed = _Named("changed")  # pub/sub channel per job id: its new status, at every transition
    console_live = _Named("console-live")  # per SHA-256 of a console session cookie: its open live streams
    upload = _Named("upload")  # per upload reference: JSON of a staged upload, TTL JOBQUEUE_API_UPLOAD_TTL_SECONDS
    uploads_of = _Named("uploads-of")  # per owner: zset of their upload references -> expiry ms (their quota)

    def jobs_by(self, kind: ListingIndex, value: str) -> str:
        """A listing index: the jobs whose `kind` is `value`, scored by submission ms."""
        return f"{self.jobs_by_prefix}{kind.value}:{value}"

    @property
    def jobs_by_prefix(self) -> str:
        return f"{self.prefix}jobs-by:"

    @property
    def shard_jobs(self) -> str:
        """The listing index of every shard of a sharded query (`<p>jobs-by:kind:shard`)."""
        return self.jobs_by(ListingIndex.KIND, SHARD_KIND)

    def jobs_by_state(self) -> dict[str, str]:
        """Each job status -> its listing index (the scripts move a job between them)."""
        return {s.value: self.jobs_by(ListingIndex.STATE, s.value) for s in JobStatus}
    shard_released = _Named("shard-released")  # set per sharded query's parent: shards whose end released a held one

    # keys without a variable part
    deadlines = _Fixed("deadlines")  # zset: job id -> completion deadline (ms)
    jobs_index = _Fixed("jobs")  # zset: job id -> submission time (ms)
    jobs_by_wait = _Fixed("jobs-by-wait")  # zset: job id -> ms from submission to the first start
    jobs_by_duration = _Fixed("jobs-by-duration")  # zset: job id -> ms from the first start to the finish
    listing_indexes = _Fixed("listing-indexes")  # set: the jobs-by:<kind>:<value> keys that exist
    group_states = _Fixed("group-states")  # hash: group -> JSON of the manager's last decision (when it changes)
    manager_state = _Fixed("manager")  # hash: `tick_at` (epoch seconds of the leader's last tick)
    groups = _Fixed("groups")
    counters = _Fixed("counters")
    active_jobs = _Fixed("active-jobs")  # hash: `owner:<o>` / `team:<t>` -> unfinished jobs (quotas)
    schedules = _Fixed("schedules")
    events = _Fixed("events")
    tokens = _Fixed("tokens")  # zset: API token id -> creation time (ms)
    registry_versions = _Fixed("registry-versions")  # hash: version number -> JSON `RegistryVersion`
    registry_current = _Fixed("registry-current")  # string: the current version id
    oidc_logins = _Fixed("oidc-logins")  # zset: SHA-256 of a sign-in's `state` -> its expiry (ms)
