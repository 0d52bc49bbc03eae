"""The consumer's Prometheus metrics, served on its `/metrics` beside the process metrics.

One consumer, one scrape target: the labels are the resource group only (Prometheus adds the
target: `instance`, and on Kubernetes the pod), never a job or a user. Every series is rendered at
scrape time from the consumer's state, so each exists from the start (counters at 0):

- busy and idle time: seconds its job slots spent running a job, and not; `busy + idle` grows by
  `jobs_per_consumer` per second, so `rate(busy) / (rate(busy) + rate(idle))` is its busy ratio
- the running jobs' memory (the process's resident memory while a job runs, 0 when idle) beside the
  memory it may use, and their spill (the bytes in its DuckDB temp directories now)
- the scan cache: blocks hit, missed and evicted, bytes read by origin, and bytes it holds

The manager exports the cluster-wide job counters (from Redis); these are what only the consumer sees.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from prometheus_client import GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR, CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from jobqueue.engine.disk_space import own_spill_bytes
from jobqueue.engine.scan_cache import BlockCache, ScanStats


def resident_memory_bytes() -> int:
    """This process's resident memory (Linux `/proc/self/statm`); 0 where it cannot be read."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class ConsumerMetrics(Collector):
    """The consumer's series. `running_job` brackets each job; the rest is read when scraped."""

    def __init__(self, group: str, slots: int, memory_limit_bytes: int, spill_root: Path,
                 scan_cache: BlockCache | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.group, self.slots = group, slots
        self.memory_limit_bytes = memory_limit_bytes
        self.spill_root = spill_root
        self.scan_cache = scan_cache
        self.clock = clock
        self.started = clock()
        self._running: dict[tuple[str, int], float] = {}  # (job id, run) -> when it started
        self._runs = itertools.count()
        self._busy_done = 0.0  # seconds of jobs that ended
        self.registry = CollectorRegistry()
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR, self):
            self.registry.register(collector)

    @contextlib.contextmanager
    def running_job(self, job_id: str) -> Iterator[None]:
        """Count the block as busy time of one job slot, and the job as running."""
        run = (job_id, next(self._runs))  # a job taken again while its first run winds down counts twice
        self._running[run] = self.clock()
        try:
            yield
        finally:
            self._busy_done += self.clock() - self._running.pop(run)

    def busy_seconds(self) -> float:
        now = self.clock()
        return self._busy_done + sum(now - started for started in self._running.values())

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        labels, values = ["group"], [self.group]
        now, busy = self.clock(), self.busy_seconds()
        idle = max(0.0, self.slots * (now - self.started) - busy)
        running = len(self._running)
        yield from (
            _counter("jobqueue_consumer_busy_seconds", "Seconds this consumer's job slots spent running a job.",
                     labels, values, busy),
            _counter("jobqueue_consumer_idle_seconds", "Seconds this consumer's job slots spent without a job.",
                     labels, values, idle),
            _gauge("jobqueue_consumer_jobs_running", "Jobs this consumer is running.", labels, values, running),
            _gauge("jobqueue_consumer_job_slots", "Jobs this consumer runs at once (its group's jobs_per_consumer).",
                   labels, values, self.slots),
            _gauge("jobqueue_consumer_job_memory_bytes", "Resident memory of this consumer while it runs a job (all "
                   "its running jobs together), 0 when idle.", labels, values,
                   resident_memory_bytes() if running else 0),
            _gauge("jobqueue_consumer_memory_limit_bytes", "Memory this consumer may use: its container's (cgroup) "
                   "limit, or JOBQUEUE_CONTAINER_MEMORY_BYTES; DuckDB gets a share of it.", labels, values,
                   self.memory_limit_bytes),
            _gauge("jobqueue_consumer_job_spill_bytes", "Bytes the running jobs have spilled to disk now (DuckDB "
                   "temp directories).", labels, values, own_spill_bytes(self.spill_root) if running else 0),
        )
        yield from self._scan_cache(labels, values)

    def _scan_cache(self, labels: list[str], values: list[str]) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        cache = self.scan_cache
        totals = cache.totals if cache is not None else ScanStats()
        yield from (
            _counter("jobqueue_consumer_scan_cache_hits", "Scan cache blocks this consumer served from local disk.",
                     labels, values, totals.hits),
            _counter("jobqueue_consumer_scan_cache_misses", "Scan cache blocks this consumer fetched from the object "
                     "store.", labels, values, totals.misses),
            _counter("jobqueue_consumer_scan_cache_evictions", "Scan cache blocks this consumer evicted.", labels,
                     values, totals.evictions),
            _gauge("jobqueue_consumer_scan_cache_used_bytes", "Bytes this consumer's scan cache holds.", labels,
                   values, cache.used if cache is not None else 0),
            _gauge("jobqueue_consumer_scan_cache_capacity_bytes", "This consumer's scan cache size (0: no cache).",
                   labels, values, cache.capacity if cache is not None else 0),
        )
        read = CounterMetricFamily("jobqueue_consumer_scan_cache_read_bytes", "Source bytes this consumer read "
                                   "through its scan cache, by where they came from.", labels=[*labels, "origin"])
        read.add_metric([*values, "cache"], totals.bytes_from_cache)
        read.add_metric([*values, "remote"], totals.bytes_from_remote)
        yield read


def _counter(name: str, doc: str, labels: list[str], values: list[str], value: float) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=labels)
    family.add_metric(values, value)
    return family


def _gauge(name: str, doc: str, labels: list[str], values: list[str], value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=labels)
    family.add_metric(values, value)
    return family
