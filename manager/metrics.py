"""The manager's Prometheus metrics: one `jobqueue_` prefix, base units, no job ids as labels.

Gauges describe each group as of the last tick. Job counters are kept in Redis (consumers and
SDKs increment `<prefix>counters` inside the same atomic transitions that change a job's state),
so they are right however many consumers and managers there are; the manager exports a snapshot
taken every tick.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from jobqueue.groups import ResourceGroup
from jobqueue.keys import (
    CounterField,
    CounterName,
    HistogramField,
    HistogramName,
    TeamCounterField,
    TeamCounterName,
    parse_counter_field,
)
from manager.observe import GroupObservation
from manager.policy import Decision

JOB_EVENTS = (CounterName.ENQUEUED, CounterName.STARTED, CounterName.SUCCEEDED, CounterName.FAILED, CounterName.RETRIED,
              CounterName.CANCELLED, CounterName.EXPIRED)
# every other counter: (metric name, help, extra label and its value or None)
COUNTER_METRICS: dict[CounterName, tuple[str, str, tuple[str, str] | None]] = {
    CounterName.SPILLED_BYTES: ("jobqueue_spilled_bytes", "Peak spill bytes summed over jobs.", None),
    CounterName.SCAN_CACHE_BYTES_CACHE: ("jobqueue_scan_cache_read_bytes", "Source bytes read through consumers' "
                                     "table-scan caches, by where they came from.", ("origin", "cache")),
    CounterName.SCAN_CACHE_BYTES_REMOTE: ("jobqueue_scan_cache_read_bytes", "", ("origin", "remote")),
    CounterName.SCAN_CACHE_EVICTIONS: ("jobqueue_scan_cache_evictions", "Scan cache blocks evicted by queries.", None),
    CounterName.SCAN_CACHE_HITS: ("jobqueue_scan_cache_hits", "Scan cache blocks served from local disk.", None),
    CounterName.SCAN_CACHE_MISSES: ("jobqueue_scan_cache_misses", "Scan cache blocks fetched from the object store.",
                                None),
    CounterName.OOM_KILLS: ("jobqueue_consumer_oom_kills", "Consumers the kernel killed for memory (their memory "
                        "cgroup's OOM killer; Kubernetes: OOMKilled).", None),
}


class BackendErrorKind(StrEnum):
    """The `kind` label of `jobqueue_backend_errors_total`: a closed set, each with a sample from the start."""

    UNREACHABLE = "unreachable"
    API = "api"
    INVALID = "invalid"
    OS = "os"
    OTHER = "other"

    @property
    def doc(self) -> str:
        return _KIND_DOCS[self]


_KIND_DOCS = {
    BackendErrorKind.UNREACHABLE: "the backend's API did not answer (timeout, connection)",
    BackendErrorKind.API: "it answered with an error status (e.g. Kubernetes 403, 409, 422)",
    BackendErrorKind.INVALID: "an object could not be rendered from the group's config",
    BackendErrorKind.OS: "the operating system refused (local backend: starting a process, a cgroup)",
    BackendErrorKind.OTHER: "anything else (see the manager's log)",
}


def backend_error_kind(error: BaseException) -> BackendErrorKind:
    """The kind of a failed backend call. Duck-typed, so that only `manager.backends.kubernetes` imports the
    Kubernetes client: its `ApiException` carries an integer `status`, its transport errors come from aiohttp."""
    if isinstance(error, TimeoutError | ConnectionError) or type(error).__module__.split(".")[0] == "aiohttp":
        return BackendErrorKind.UNREACHABLE
    if isinstance(getattr(error, "status", None), int):
        return BackendErrorKind.API
    if isinstance(error, ValueError):
        return BackendErrorKind.INVALID
    if isinstance(error, OSError):
        return BackendErrorKind.OS
    return BackendErrorKind.OTHER


def _counter_families() -> dict[CounterName, CounterMetricFamily]:
    """A family for every counter (the scan-cache byte counters share one, labelled by origin)."""
    families: dict[CounterName, CounterMetricFamily] = {
        event: CounterMetricFamily(f"jobqueue_jobs_{event}", f"Jobs {event}, all consumers.", labels=["group"])
        for event in JOB_EVENTS
    }
    by_name: dict[str, CounterMetricFamily] = {}
    for counter, (name, doc, extra) in COUNTER_METRICS.items():
        labels = ["group", extra[0]] if extra else ["group"]
        families[counter] = by_name.setdefault(name, CounterMetricFamily(name, doc, labels=labels))
    return families


class RedisCounters(Collector):
    """Counters aggregated in Redis, exported from the last snapshot. Every counter and histogram has a sample for
    every known group from the start (0 until its first event), so that `increase()` sees the first event."""

    def __init__(self, max_teams: int = 50) -> None:
        self.snapshot: dict[str, float] = {}
        self.known_groups: Callable[[], Iterable[str]] = tuple
        self.teams = TeamLabels(max_teams)

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        families = _counter_families()
        groups = set(self.known_groups())
        values: dict[tuple[CounterName, str], float] = {(c, g): 0.0 for c in CounterName for g in groups}
        histograms: dict[tuple[HistogramName, str], dict[str, float]] = {(h, g): {} for h in HistogramName
                                                                         for g in groups}
        team_values: dict[tuple[str, TeamCounterName], float] = {}
        for field, value in sorted(self.snapshot.items()):  # sorted: new teams are labelled in name order
            parsed = parse_counter_field(field)
            if isinstance(parsed, TeamCounterField):
                at = (self.teams.label(parsed.team), parsed.counter)
                team_values[at] = team_values.get(at, 0.0) + value
            elif isinstance(parsed, CounterField):
                values[(parsed.counter, parsed.group)] = value
            elif isinstance(parsed, HistogramField):
                histograms.setdefault((parsed.histogram, parsed.group), {})[parsed.le] = value
        for (counter, group), value in sorted(values.items()):
            extra = COUNTER_METRICS.get(counter, ("", "", None))[2]
            families[counter].add_metric([group, extra[1]] if extra else [group], value)
        yield from {id(f): f for f in families.values()}.values()
        yield from _histograms(histograms)
        yield _team_family(team_values)


OTHER_TEAMS = "_other"  # the label of the teams past `metrics_max_teams` (a team name cannot start with '_')


class TeamLabels:
    """The `team` label values: the first `max_teams` teams seen get their own (in the order first seen; a
    snapshot's new teams in name order), and keep it for the life of the process, so a labelled team's counter
    never moves; every later team is summed into `_other`. Clients write arbitrary team names in trusted mode,
    and so the series count stays bounded however many they write."""

    def __init__(self, max_teams: int) -> None:
        self.max_teams = max_teams
        self.named: set[str] = set()

    def label(self, team: str) -> str:
        if team in self.named:
            return team
        if len(self.named) < self.max_teams:
            self.named.add(team)
            return team
        return OTHER_TEAMS


def _team_family(values: dict[tuple[str, TeamCounterName], float]) -> CounterMetricFamily:
    family = CounterMetricFamily("jobqueue_team_jobs", "Jobs of each team, by event (submitted, or an outcome). "
                                 "Only jobs with a team; teams past JOBQUEUE_METRICS_MAX_TEAMS are summed as "
                                 f"team={OTHER_TEAMS!r}.", labels=["team", "event"])
    for (team, event), value in sorted(values.items()):
        family.add_metric([team, event.value], value)
    return family


# each stored histogram: (metric name, help, extra label and its value or None)
HISTOGRAM_METRICS: dict[HistogramName, tuple[str, str, tuple[str, str] | None]] = {
    HistogramName.JOB_QUEUE_WAIT_SECONDS: ("jobqueue_job_queue_wait_seconds",
                                           "Seconds from submission to start, per succeeded job.", None),
    HistogramName.JOB_RUN_SECONDS: ("jobqueue_job_run_seconds", "Seconds a consumer spent on a job that succeeded, "
                                    "or on the last attempt of a job that failed, by outcome.",
                                    ("outcome", "succeeded")),
    HistogramName.JOB_FAILED_RUN_SECONDS: ("jobqueue_job_run_seconds", "", ("outcome", "failed")),
    HistogramName.JOB_SPILLED_BYTES: ("jobqueue_job_spilled_bytes", "Peak spill bytes per succeeded job.", None),
}


def _histograms(data: dict[tuple[HistogramName, str], dict[str, float]]) -> Iterator[HistogramMetricFamily]:
    """Every bucket of every histogram: Redis only holds the buckets a job fell into (cumulative), so a
    missing bucket is a zero."""
    families: dict[str, HistogramMetricFamily] = {}
    for (hist, group), fields in sorted(data.items()):
        name, doc, extra = HISTOGRAM_METRICS[hist]
        family = families.get(name)
        if family is None:
            family = families[name] = HistogramMetricFamily(name, doc, labels=["group", extra[0]] if extra
                                                            else ["group"])
        buckets = [(_le(str(le)), fields.get(str(le), 0.0)) for le in hist.buckets] + [("+Inf", fields.get("+Inf", 0))]
        family.add_metric([group, extra[1]] if extra else [group], buckets=buckets, sum_value=fields.get("sum", 0.0))
    yield from families.values()


def _le(raw: str) -> str:
    return str(float(raw))


GROUP_GAUGES = (
    ("queue_ready_jobs", "Jobs due now, not running, and not held by their team's running limit."),
    ("queue_deferred_jobs", "Jobs queued for later (retries, delays)."),
    ("queue_held_jobs", "Jobs due now whose team runs its limit in the group: no consumer may take them yet."),
    ("jobs_in_flight", "Jobs being executed by live consumers."),
    ("queue_oldest_ready_age_seconds", "Age of the oldest due job."),
    ("consumers_desired", "Consumers the manager wants."),
    ("consumers_current", "Consumers running and not being stopped."),
    ("consumers_ready", "Consumers with a fresh heartbeat."),
    ("consumers_busy", "Consumers executing a job."),
    ("consumers_min", "The group's min_instances."),
    ("consumers_max", "The group's max_instances."),
    ("group_error", "1 when the last tick could not observe or reconcile the group (the error is in the logs and "
     "`jobqueue status`); the other groups go on."),
    ("group_config_error", "1 when the group's config is broken (see the logs or `jobqueue status`); what runs "
     "is left alone until it is fixed."),
)


@dataclass(frozen=True)
class GroupValues:
    """What the last tick saw of one group; each field is the gauge of the same name in `GROUP_GAUGES`, but the
    oldest ready job is kept as a time (`oldest_ready_ms`), so a steady group's values do not change every tick."""

    queue_ready_jobs: float
    queue_deferred_jobs: float
    queue_held_jobs: float
    jobs_in_flight: float
    oldest_ready_ms: float  # 0 when nothing is ready
    consumers_desired: float
    consumers_current: float
    consumers_ready: float
    consumers_busy: float
    consumers_min: float
    consumers_max: float
    group_error: float
    group_config_error: float

    def gauge(self, name: str, now: float) -> float:
        if name == "queue_oldest_ready_age_seconds":
            return max(0.0, now - self.oldest_ready_ms / 1000) if self.oldest_ready_ms else 0.0
        return float(getattr(self, name))


class GroupGauges(Collector):
    """Per-group gauges, rendered at scrape time from what the last tick saw: a tick only stores one
    `GroupValues` per group, so its cost does not include Prometheus label lookups for every group."""

    def __init__(self) -> None:
        self.values: dict[str, GroupValues] = {}

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families = [(name, GaugeMetricFamily(f"jobqueue_{name}", doc, labels=["group"])) for name, doc in GROUP_GAUGES]
        now = time.time()
        for group, values in sorted(self.values.items()):
            for name, family in families:
                family.add_metric([group], values.gauge(name, now))
        yield from (family for _, family in families)


class ManagerMetrics:
    def __init__(self, max_teams: int = 50) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.tick = Histogram("jobqueue_manager_tick_seconds", "Duration of one reconcile tick.", registry=r,
                              buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
        self.leader = Gauge("jobqueue_manager_is_leader", "1 when this manager acts.", registry=r)
        self.tick_age = Gauge("jobqueue_manager_last_tick_age_seconds", "Seconds since this manager last completed a "
                              "tick (a standby: its last leadership check), or since it started; alert when it is "
                              "several ticks old.", registry=r)
        self.reached = Gauge("jobqueue_manager_redis_up", "1 when this manager's last tick reached Redis, 0 when "
                              "Redis was unreachable (or before the first tick).", registry=r)
        self.decisions = Counter("jobqueue_scale_decisions", "Scaling actions taken.", ["direction", "reason"],
                                 registry=r)
        self.backend_errors = Counter("jobqueue_backend_errors", "Failed backend calls, by kind: "
                                      + "; ".join(f"{k.value}: {k.doc}" for k in BackendErrorKind) + ".",
                                      ["backend", "kind"], registry=r)
        self.gc_removed = Counter("jobqueue_gc_removed", "Items the garbage collector removed, by kind (staged_input, "
                                  "staged_upload, result, result_folder, jobs_index, deadlines, schedule_runs, "
                                  "listing_indexes; listing_backfill: jobs indexed).", ["kind"], registry=r)
        self.groups = GroupGauges()
        r.register(self.groups)
        self.counters = RedisCounters(max_teams)
        r.register(self.counters)

    def observe_group(
        self, name: str, group: ResourceGroup | None, obs: GroupObservation, current: int, decision: Decision,
        config_error: bool = False, error: bool = False,
    ) -> None:
        stats = obs.stats
        oldest = obs.oldest_ready_ms or 0
        bounds = (group.min_instances, group.max_instances) if group is not None else (0, 0)
        self.groups.values[name] = GroupValues(
            queue_ready_jobs=stats.ready, queue_deferred_jobs=stats.deferred, queue_held_jobs=stats.held,
            jobs_in_flight=stats.in_flight,
            oldest_ready_ms=oldest, consumers_desired=decision.replicas, consumers_current=current,
            consumers_ready=len(obs.consumers), consumers_busy=stats.busy_consumers, consumers_min=bounds[0],
            consumers_max=bounds[1], group_error=1 if error else 0, group_config_error=1 if config_error else 0,
        )
        if decision.replicas != current:
            self.decisions.labels(decision.direction, decision.reason).inc()

    def serve_backend(self, backend: str) -> None:
        """Give `backend`'s error counter a sample at 0 for every kind, so that `increase()` sees the first one."""
        for kind in BackendErrorKind:
            self.backend_errors.labels(backend, kind.value)

    def backend_error(self, backend: str, error: BaseException) -> None:
        self.backend_errors.labels(backend, backend_error_kind(error).value).inc()

    def redis_reached(self, up: bool) -> None:
        self.reached.set(1 if up else 0)

    def forget_group(self, name: str) -> None:
        self.groups.values.pop(name, None)
