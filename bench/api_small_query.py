"""The small query of bench/api.py: a 100-row query, submit -> result in pandas, in-process, direct to Redis (timed
in parts against the record's own times) and over HTTP; with the workload and the percentile helpers the
benchmark's other half uses too."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

from jobqueue.client import AsyncJobQueueClient
from jobqueue.handles import AsyncJobHandle
from jobqueue.models import JobRecord
from jobqueue.sample import sample_input

USERS = 2_000
OUTPUT = ["user.f0", "user.f1"]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


class Direct:
    """One direct run, timed: the client's wall clock against the record's times (one machine, one clock)."""

    def __init__(self, submit: float, total: float, record: JobRecord, submitted: float, waited: float,
                 read: float) -> None:
        assert record.started_at is not None and record.finished_at is not None and record.summary is not None
        started, finished = record.started_at.timestamp(), record.finished_at.timestamp()
        self.submit, self.total, self.read = submit, total, read
        self.pickup = started - submitted
        self.run = finished - started
        self.noticed = waited - finished
        stages = record.summary.stage_seconds
        self.engine = {k: v for k, v in stages.items()}
        self.engine["execute.duckdb"] = record.summary.execution_seconds
        self.outside_engine = self.run - record.summary.total_seconds  # claim, registry, thread hop, transition


async def small_direct(client: AsyncJobQueueClient, data: dict[str, Any], times: Any) -> Direct:
    t0 = time.perf_counter()
    handle = await client.offline_query(data, OUTPUT, times)
    submitted, t1 = time.time(), time.perf_counter()
    assert isinstance(handle, AsyncJobHandle)
    record = await handle.wait(show_progress=False)
    waited, t2 = time.time(), time.perf_counter()
    frame = await handle.to_pandas()
    t3 = time.perf_counter()
    assert len(frame) == 100
    return Direct(t1 - t0, t3 - t0, record, submitted, waited, t3 - t2)


async def small_in_process(client: AsyncJobQueueClient, data: dict[str, Any], times: Any) -> float:
    t0 = time.perf_counter()
    result = await client.offline_query(data, OUTPUT, times, run_asynchronously=False)
    frame = await result.to_pandas()
    assert len(frame) == 100
    return time.perf_counter() - t0


def breakdown(runs: list[Direct]) -> dict[str, float]:
    parts: dict[str, float] = {
        "submit (plan, stage Parquet, Redis writes)": statistics.median(r.submit for r in runs),
        "pickup (submit returned -> claimed)": statistics.median(r.pickup for r in runs),
        "run (claimed -> final transition)": statistics.median(r.run for r in runs),
    }
    for stage in runs[0].engine:
        parts[f"  engine {stage}"] = statistics.median(r.engine.get(stage, 0.0) for r in runs)
    parts["  outside the engine (registry, plan/limits, thread hop, transitions)"] = statistics.median(
        r.outside_engine for r in runs)
    parts["noticed (final transition -> wait() returned)"] = statistics.median(r.noticed for r in runs)
    parts["read (result -> pandas)"] = statistics.median(r.read for r in runs)
    return {k: ms(v) for k, v in parts.items()}


async def small_http(client: AsyncJobQueueClient, data: dict[str, Any], times: Any) -> float:
    t0 = time.perf_counter()
    handle = await client.offline_query(data, OUTPUT, times)
    assert isinstance(handle, AsyncJobHandle)
    await handle.wait(show_progress=False)
    frame = await handle.to_pandas()
    assert len(frame) == 100
    return time.perf_counter() - t0


@dataclass
class SmallQueries:
    """The 100-row query's runs on each side: in-process, direct (timed in parts) and over HTTP."""

    in_process: list[float]
    direct: list[Direct]
    http: list[float]

    def report(self) -> dict[str, Any]:
        totals = [r.total for r in self.direct]
        print(f"small query, {len(totals)} runs (ms, p50 / p99):")
        for name, values in (("http", self.http), ("direct", totals), ("in-process", self.in_process)):
            print(f"  {name:<10} {ms(statistics.median(values)):8.2f} / {ms(pct(values, 99)):8.2f}")
        print("direct, median of each part (ms; parts are medians, so they need not add up to the total):")
        parts = breakdown(self.direct)
        for name, value in parts.items():
            print(f"  {name:<72} {value:8.2f}")
        return {
            "small_query_p50_ms": {"http": ms(statistics.median(self.http)), "direct": ms(statistics.median(totals))},
            "small_query_p99_ms": {"http": ms(pct(self.http, 99)), "direct": ms(pct(totals, 99))},
            "small_query_in_process_p50_ms": ms(statistics.median(self.in_process)),
            "small_query_in_process_p99_ms": ms(pct(self.in_process, 99)),
            "small_query_breakdown_ms": parts,
        }


async def small_queries(runs: int, warmup: int, client: AsyncJobQueueClient,
                        http: AsyncJobQueueClient) -> SmallQueries:
    """`runs` of each side after `warmup` of each: one series after the other, since interleaved, each
    in-process run would overlap the consumer's work after the direct run before it (its outcome, clean-up, the
    next query's DuckDB instance)."""
    data, times = sample_input(USERS, 100, seed=3)
    for _ in range(warmup):
        await small_direct(client, data, times)
        await small_http(http, data, times)
        await small_in_process(client, data, times)
    in_process = [await small_in_process(client, data, times) for _ in range(runs)]
    direct = [await small_direct(client, data, times) for _ in range(runs)]
    remote = [await small_http(http, data, times) for _ in range(runs)]
    return SmallQueries(in_process, direct, remote)
