"""The manager's Prometheus metrics: one `jobqueue_` prefix, base units, no job ids as labels.

Gauges describe each group as of the last tick. Job counters are kept in Redis (consumers and
SDKs increment `<prefix>counters` inside the same atomic transitions that change a job's state),
so they are right however many consumers and managers there are; the manager exports a snapshot
taken every tick.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from jobqueue.groups import ResourceGroup
from jobqueue.jobstore import HISTOGRAM_BUCKETS
from manager.observe import GroupObservation
from manager.policy import Decision

JOB_EVENTS = ("enqueued", "started", "succeeded", "failed", "retried", "cancelled", "expired")


class RedisCounters(Collector):
    """Counters aggregated in Redis, exported from the last snapshot."""

    def __init__(self) -> None:
        self.snapshot: dict[str, float] = {}

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        families = {
            event: CounterMetricFamily(f"jobqueue_jobs_{event}", f"Jobs {event}, all consumers.", labels=["group"])
            for event in JOB_EVENTS
        }
        spilled = CounterMetricFamily("jobqueue_spilled_bytes", "Peak spill bytes summed over jobs.", labels=["group"])
        cache_bytes = CounterMetricFamily("jobqueue_scan_cache_read_bytes", "Source bytes read through consumers' "
                                          "table-scan caches, by where they came from.", labels=["group", "origin"])
        evictions = CounterMetricFamily("jobqueue_scan_cache_evictions", "Scan cache blocks evicted by queries.",
                                        labels=["group"])
        hits = CounterMetricFamily("jobqueue_scan_cache_hits", "Scan cache blocks served from local disk.",
                                   labels=["group"])
        misses = CounterMetricFamily("jobqueue_scan_cache_misses", "Scan cache blocks fetched from the object store.",
                                     labels=["group"])
        oom_kills = CounterMetricFamily("jobqueue_consumer_oom_kills", "Consumers the kernel killed for memory "
                                        "(their memory cgroup's OOM killer; Kubernetes: OOMKilled).", labels=["group"])
        histograms: dict[tuple[str, str], dict[str, float]] = {}
        for field, value in sorted(self.snapshot.items()):
            event, _, group = field.partition(":")
            if event in families:
                families[event].add_metric([group], value)
            elif event == "spilled_bytes":
                spilled.add_metric([group], value)
            elif event in ("scan_cache_bytes_cache", "scan_cache_bytes_remote"):
                cache_bytes.add_metric([group, event.rsplit("_", 1)[1]], value)
            elif event == "scan_cache_evictions":
                evictions.add_metric([group], value)
            elif event == "scan_cache_hits":
                hits.add_metric([group], value)
            elif event == "scan_cache_misses":
                misses.add_metric([group], value)
            elif event == "oom_kills":
                oom_kills.add_metric([group], value)
            elif event == "hist":
                name, group, le = group.split(":")
                histograms.setdefault((name, group), {})[le] = value
        yield from families.values()
        yield spilled
        yield from (cache_bytes, evictions, hits, misses, oom_kills)
        yield from _histograms(histograms)


HISTOGRAM_DOCS = {
    "job_queue_wait_seconds": "Seconds from submission to start, per succeeded job.",
    "job_run_seconds": "Seconds a consumer spent on a succeeded job.",
    "job_spilled_bytes": "Peak spill bytes per succeeded job.",
}


def _histograms(data: dict[tuple[str, str], dict[str, float]]) -> Iterator[HistogramMetricFamily]:
    """Every bucket of every histogram: Redis only holds the buckets a job fell into (cumulative), so a
    missing bucket is a zero."""
    families: dict[str, HistogramMetricFamily] = {}
    for (name, group), fields in sorted(data.items()):
        family = families.setdefault(name, HistogramMetricFamily(
            f"jobqueue_{name}", HISTOGRAM_DOCS.get(name, name), labels=["group"]))
        bounds = HISTOGRAM_BUCKETS.get(name, ())
        buckets = [(_le(str(le)), fields.get(str(le), 0.0)) for le in bounds] + [("+Inf", fields.get("+Inf", 0))]
        family.add_metric([group], buckets=buckets, sum_value=fields.get("sum", 0.0))
    yield from families.values()


def _le(raw: str) -> str:
    return str(float(raw))


GROUP_GAUGES = (
    ("queue_ready_jobs", "Jobs due now and not running."),
    ("queue_deferred_jobs", "Jobs queued for later (retries, delays)."),
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


class GroupGauges(Collector):
    """Per-group gauges, rendered at scrape time from what the last tick saw: a tick only stores one
    tuple per group, so its cost does not include Prometheus label lookups for every group."""

    def __init__(self) -> None:
        self.values: dict[str, tuple[float, ...]] = {}

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families = [GaugeMetricFamily(f"jobqueue_{name}", doc, labels=["group"]) for name, doc in GROUP_GAUGES]
        now = time.time()
        for group, values in sorted(self.values.items()):
            oldest_ms = values[3]  # stored as a time, so a steady group's tuple does not change every tick
            values = (*values[:3], max(0.0, now - oldest_ms / 1000) if oldest_ms else 0.0, *values[4:])
            for family, value in zip(families, values, strict=True):
                family.add_metric([group], value)
        yield from families


class ManagerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.tick = Histogram("jobqueue_manager_tick_seconds", "Duration of one reconcile tick.", registry=r,
                              buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
        self.leader = Gauge("jobqueue_manager_is_leader", "1 when this manager acts.", registry=r)
        self.decisions = Counter("jobqueue_scale_decisions", "Scaling actions taken.", ["direction", "reason"],
                                 registry=r)
        self.backend_errors = Counter("jobqueue_backend_errors", "Failed backend calls.", ["backend", "kind"],
                                      registry=r)
        self.gc_removed = Counter("jobqueue_gc_removed", "Items the garbage collector removed, by kind (staged_input, "
                                  "result, result_folder, jobs_index, deadlines, schedule_runs).", ["kind"], registry=r)
        self.groups = GroupGauges()
        r.register(self.groups)
        self.counters = RedisCounters()
        r.register(self.counters)

    def observe_group(
        self, name: str, group: ResourceGroup | None, obs: GroupObservation, current: int, decision: Decision,
        config_error: bool = False, error: bool = False,
    ) -> None:
        stats = obs.stats
        oldest = obs.oldest_ready_ms or 0
        bounds = (group.min_instances, group.max_instances) if group is not None else (0, 0)
        self.groups.values[name] = (
            stats.ready, stats.deferred, stats.in_flight, oldest, decision.replicas, current, len(obs.consumers),
            stats.busy_consumers, *bounds, 1 if error else 0, 1 if config_error else 0,
        )
        if decision.replicas != current:
            self.decisions.labels(decision.direction, decision.reason).inc()

    def forget_group(self, name: str) -> None:
        self.groups.values.pop(name, None)
