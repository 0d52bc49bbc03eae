"""A consumer's own /metrics: on by default under `jobqueue up` (a free port, named in its log), busy and idle
time, the running job's memory and spill while it runs, and the scan cache."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
from pathlib import Path

from prometheus_client import generate_latest

from consumer.metrics import ConsumerMetrics
from jobqueue import AsyncJobQueueClient, ResourceRequests
from jobqueue.sample import sample_input
from manager.backends.local import LocalBackend, LocalConsumer
from tests.helpers import eventually, running_manager, with_groups
from tests.integration.test_manager_http import consumer_page, dashboard_queries, metric_names, served_names
from tests.integration.test_s3 import OUTPUT, upload_store


def metrics_url(log: Path) -> str | None:
    """Where a consumer serves /metrics: the `url` of its `ops server listening` log line."""
    for line in log.read_text().splitlines() if log.is_file() else []:
        record = json.loads(line) if line.startswith("{") else {}
        if record.get("event") == "ops server listening":
            return str(record["url"])
    return None


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()


def value(text: str, series: str) -> float:
    (line,) = [ln for ln in text.splitlines() if ln.startswith(series + " ")]
    return float(line.rsplit(" ", 1)[1])


async def consumer_url(backend: LocalBackend, group: str) -> tuple[LocalConsumer, str]:
    (consumer,) = await eventually(lambda: backend.active(group), what=f"a consumer of {group}")
    log = backend.log_dir / f"{consumer.consumer_id}.log"
    url = await eventually(lambda: metrics_url(log), what=f"the metrics url in {log}")
    return consumer, url


async def test_a_local_consumer_serves_its_metrics_by_default_with_its_scan_cache(
    s3_settings, store, s3_bucket, tmp_path
):
    registry = upload_store(s3_settings, store, s3_bucket, tmp_path)
    settings = with_groups(s3_settings, tmp_path, {"default": {"min_instances": 1, "max_instances": 1}},
                           registry_path=registry, table_scan_cache_bytes=64 << 20)
    ids, times = sample_input(store.users, 2_000, seed=9)
    async with running_manager(settings) as backend, AsyncJobQueueClient(settings) as client:
        consumer, url = await consumer_url(backend, "default")
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/metrics", url)
        before = await asyncio.to_thread(scrape, url)
        g = '{group="default"}'
        for series in ("jobqueue_consumer_scan_cache_hits_total", "jobqueue_consumer_scan_cache_misses_total",
                       "jobqueue_consumer_scan_cache_evictions_total", "jobqueue_consumer_busy_seconds_total"):
            assert value(before, series + g) == 0, f"{series} has a zero sample before the first job"
        for _ in range(2):  # the second run reads its sources from the cache
            await (await client.offline_query(ids, OUTPUT, times)).wait(timeout=60, show_progress=False)
        text = await asyncio.to_thread(scrape, url)
        assert consumer.process.poll() is None
    assert value(text, f"jobqueue_consumer_scan_cache_hits_total{g}") > 0
    assert value(text, f"jobqueue_consumer_scan_cache_misses_total{g}") > 0
    assert value(text, 'jobqueue_consumer_scan_cache_read_bytes_total{group="default",origin="cache"}') > 0
    assert value(text, 'jobqueue_consumer_scan_cache_read_bytes_total{group="default",origin="remote"}') > 0
    assert 0 < value(text, f"jobqueue_consumer_scan_cache_used_bytes{g}") <= 64 << 20
    assert value(text, f"jobqueue_consumer_scan_cache_capacity_bytes{g}") == 64 << 20
    assert value(text, f"jobqueue_consumer_busy_seconds_total{g}") > 0
    assert value(text, f"jobqueue_consumer_idle_seconds_total{g}") > 0
    assert value(text, f"jobqueue_consumer_jobs_running{g}") == 0
    assert "process_resident_memory_bytes" in text
    wanted = {n for _, expr in dashboard_queries() for n in metric_names(expr)} & served_names(consumer_page())
    assert wanted and wanted <= served_names(text), "the dashboard's consumer panels read what a consumer serves"


async def test_a_spilling_job_shows_its_memory_and_spill_while_it_runs(settings, big_store, tmp_path):
    settings = with_groups(settings, tmp_path, {"tight": {"min_instances": 1, "max_instances": 1, "memory": "320MiB",
                                                          "memory_limit_percent": 30}},
                           registry_path=big_store.registry_path)
    g = '{group="tight"}'
    ids, times = sample_input(big_store.users, 1_000_000, seed=5)
    async with running_manager(settings) as backend, AsyncJobQueueClient(settings) as client:
        _, url = await consumer_url(backend, "tight")
        idle = await asyncio.to_thread(scrape, url)
        assert value(idle, f"jobqueue_consumer_job_memory_bytes{g}") == 0
        assert value(idle, f"jobqueue_consumer_memory_limit_bytes{g}") == 320 << 20
        job = await client.offline_query(ids, ["user.f0", "user.f1"], times,
                                         resources=ResourceRequests(resource_group="tight"))
        seen = {"memory": 0.0, "spill": 0.0}

        async def memory_and_spill_seen() -> bool:
            text = await asyncio.to_thread(scrape, url)
            if value(text, f"jobqueue_consumer_jobs_running{g}"):
                seen["memory"] = max(seen["memory"], value(text, f"jobqueue_consumer_job_memory_bytes{g}"))
                seen["spill"] = max(seen["spill"], value(text, f"jobqueue_consumer_job_spill_bytes{g}"))
            if seen["memory"] and seen["spill"] >= 1 << 20:  # DuckDB's temp files (not just its directory)
                return True
            assert not (await job.status()).is_final, f"the job ended before both were seen: {seen}"
            return False

        await eventually(memory_and_spill_seen, timeout=120, what="the running job's memory and spill")
        spilled = (await job.wait(timeout=120, show_progress=False)).summary.spilled_bytes
        text = await asyncio.to_thread(scrape, url)
    assert spilled > 0
    assert 50 << 20 < seen["memory"] < 2 << 30, seen  # the process with DuckDB's buffers, not a page count
    assert value(text, f"jobqueue_consumer_busy_seconds_total{g}") > 0
    assert value(text, f"jobqueue_consumer_jobs_running{g}") == 0
    assert value(text, f"jobqueue_consumer_job_memory_bytes{g}") == 0  # idle again
    assert value(text, f"jobqueue_consumer_job_spill_bytes{g}") == 0


def test_busy_and_idle_add_up_to_the_slots_time_and_a_job_counts_while_it_runs(tmp_path):
    now = [100.0]
    metrics = ConsumerMetrics("g", 2, 1 << 30, tmp_path, scan_cache=None, clock=lambda: now[0])

    def page() -> str:
        return generate_latest(metrics.registry).decode()

    now[0] += 10  # idle: both slots
    with metrics.running_job("a"):
        now[0] += 4
        with metrics.running_job("b"):
            now[0] += 1
            running = page()
        now[0] += 2
    now[0] += 3
    done = page()
    g = '{group="g"}'
    assert value(running, f"jobqueue_consumer_jobs_running{g}") == 2
    assert value(running, f"jobqueue_consumer_job_memory_bytes{g}") > 0
    assert value(running, f"jobqueue_consumer_busy_seconds_total{g}") == 5 + 1
    assert value(done, f"jobqueue_consumer_busy_seconds_total{g}") == 7 + 1  # a: 7 s, b: 1 s
    assert value(done, f"jobqueue_consumer_idle_seconds_total{g}") == 2 * 20 - 8
    assert value(done, f"jobqueue_consumer_jobs_running{g}") == 0
    assert value(done, f"jobqueue_consumer_job_memory_bytes{g}") == 0
