"""The manager's /metrics, /healthz and /readyz while it runs real consumers."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest
from pydantic import SecretStr

from consumer.metrics import ConsumerMetrics
from jobqueue import AsyncJobQueueClient, JobFailedError, ResourceRequests
from jobqueue.groups import load_groups
from jobqueue.ops_server import OpsServer
from jobqueue.outage import REDIS_UNREACHABLE
from jobqueue.redis import connect_redis
from jobqueue.sample import sample_input, write_sample_store
from manager.backends.local import LocalBackend
from manager.metrics import BackendErrorKind
from manager.reconcile import Reconciler
from tests.helpers import eventually, free_port, with_groups


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


DASHBOARD = Path(__file__).parents[2] / "helm" / "jobqueue" / "dashboards" / "jobqueue.json"
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"}
FLAGS = ("_is_leader", "_error")  # 0/1 gauges


def dashboard_queries() -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every templating query of the dashboard."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel["targets"]]
    return queries + [(f"variable {v['name']}", v["definition"]) for v in dashboard["templating"]["list"]
                      if v["type"] == "query"]


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers outside strings, label matchers, ranges and label
    lists that are not functions or keywords."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"label_values\(([^,)]+)(,[^)]*)?\)", r"\1", text)
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    return {m[1] for m in re.finditer(r"\b([A-Za-z_:][A-Za-z0-9_:]*)\b\s*(\()?", text)
            if not m[2] and m[1] not in PROMQL_WORDS}


def served_names(text: str) -> set[str]:
    """Every series name a /metrics page serves: its samples, and the names its families declare (a labelled family
    with no sample yet still has `_total` etc.)."""
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""], "summary": ["_sum",
                                                                                                         "_count"]}
    declared = {re.sub(r"_total$", "", name) + sfx for _, _, name, kind in (ln.split(" ") for ln in text.splitlines()
                                                                            if ln.startswith("# TYPE "))
                for sfx in suffixes.get(kind, [""])}
    return declared | {re.split(r"[{ ]", ln, maxsplit=1)[0] for ln in text.splitlines() if ln and ln[0] != "#"}


def consumer_page() -> str:
    """A consumer's /metrics page (what `consumer.metrics` serves): the dashboard's consumer panels read it."""
    metrics = ConsumerMetrics("default", 1, 1 << 30, Path("/nonexistent/spill"), scan_cache=None)
    return generate_latest(metrics.registry).decode()


def assert_dashboard_queries_served_metrics(text: str) -> None:
    """Every dashboard query reads metrics that the manager (its page: `text`) or a consumer serves."""
    served = served_names(text) | served_names(consumer_page())
    for where, expr in dashboard_queries():
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        assert names <= served, f"{where}: {expr!r} reads metrics no manager or consumer serves: {names - served}"


def unit_of(expr: str) -> str:
    """The unit a query's values have, from its metric's name: a ratio of two rates is a fraction, a quantile has its
    histogram's unit, a rate of a `_bytes` counter is bytes/s and of any other counter events/s, a `_seconds` or
    `_bytes` gauge has that unit, a 0/1 flag is a boolean, and any other gauge is a count."""
    names = metric_names(expr)
    if re.search(r"\)\s*/\s*\(?\s*sum", expr):
        return "percentunit"
    assert len(names) == 1, f"one metric per query, or a ratio: {expr!r}"
    (name,) = names
    base = re.sub(r"_(bucket|total)$", "", name)
    if name.endswith("_total"):
        assert re.search(r"\b(rate|increase|irate)\(", expr), f"a counter read without rate(): {expr!r}"
        return "Bps" if base.endswith("_bytes") else "ops"
    if name.endswith("_bucket"):
        assert "histogram_quantile(" in expr, f"buckets read without histogram_quantile(): {expr!r}"
    if base.endswith("_seconds"):
        return "s"
    if base.endswith("_bytes"):
        return "bytes"
    return "bool" if base.endswith(FLAGS) else "short"


def test_every_dashboard_panel_shows_one_unit_the_unit_of_its_queries():
    panels = json.loads(DASHBOARD.read_text())["panels"]
    mixed = {p["title"]: sorted({unit_of(t["expr"]) for t in p["targets"]}) for p in panels}
    assert {title: units for title, units in mixed.items() if len(units) != 1} == {}, "a panel mixes units"
    assert {p["title"]: p["fieldConfig"]["defaults"]["unit"] for p in panels} == {t: u[0] for t, u in mixed.items()}
    queried = {name for p in panels for t in p["targets"] for name in metric_names(t["expr"])}
    assert {"jobqueue_consumers_ready", "jobqueue_group_config_error"} <= queried, "panels for readiness and config"
    assert {"jobqueue_consumer_job_memory_bytes", "jobqueue_consumer_busy_seconds_total"} <= queried, "consumer panels"


def metric(text: str, line_start: str) -> float:
    (line,) = [ln for ln in text.splitlines() if ln.startswith(line_start)]
    return float(line.rsplit(" ", 1)[1])


async def test_metrics_and_health(settings, tmp_path, arq_redis):
    """A scripted run (a success, a deterministic failure, a retried failure, a spilling query) and exact values."""
    big = write_sample_store(tmp_path / "big", users=100_000, snapshots=10, features=3)
    registry = big.read_registry()
    registry["namespaces"]["remote"] = {"primary_key": "id", "sources": [  # an object store that refuses
        {"name": "far", "path": "s3://unreachable/far.parquet", "key": "user_id", "timestamp": "ts",
         "features": ["f0"]}]}
    (big.root / "registry-metrics.yaml").write_text(yaml.safe_dump(registry))
    closed = free_port()
    settings = with_groups(
        settings, tmp_path,
        {"default": {"max_instances": 2}, "paused": {"max_instances": 0},
         "tight": {"max_instances": 1, "memory": "320MiB", "memory_limit_percent": 30}},
        registry_path=big.root / "registry-metrics.yaml", retry_backoff_seconds=0.1,
        s3_endpoint_url=f"http://127.0.0.1:{closed}", s3_region="us-east-1", s3_access_key_id="t",
        s3_secret_access_key=SecretStr("t"),
    )
    backend = LocalBackend(settings)
    reconciler = Reconciler(arq_redis, settings, load_groups(settings.resource_groups_path), backend)
    ops = OpsServer(0, reconciler.metrics.registry, reconciler.healthy, reconciler.ready, host="127.0.0.1")
    await ops.start()
    stop = asyncio.Event()
    loop = asyncio.create_task(reconciler.run(stop))
    try:
        async with AsyncJobQueueClient(settings) as client:
            ok = await client.offline_query({"user.id": [1, 2]}, ["user.f0"])
            bad = await client.offline_query({"user.id": ["x"]}, ["user.f0"])
            flaky = await client.offline_query({"remote.id": [1]}, ["remote.f0"], max_retries=1)
            ids, times = sample_input(big.users, 1_000_000, seed=5)
            spill = await client.offline_query(ids, ["user.f0", "user.f1"], times,
                                               resources=ResourceRequests(resource_group="tight"))
            await ok.wait(timeout=60, show_progress=False)
            for job in (bad, flaky):
                with pytest.raises(JobFailedError):
                    await job.wait(timeout=60, show_progress=False)
            spilled = (await spill.wait(timeout=120, show_progress=False)).summary.spilled_bytes
            assert spilled > 0
            paused = ResourceRequests(resource_group="paused")
            await client.offline_query({"user.id": [1]}, ["user.f0"], resources=paused)

        async def scraped():
            status, text = await asyncio.to_thread(get, ops.bound_port, "/metrics")
            return text if status == 200 and 'jobqueue_queue_ready_jobs{group="paused"} 1.0' in text else None

        seen = await eventually(scraped, what="a tick that saw the paused job")
        # a scrape can land inside that tick, after its group gauges and before its counters: read the metrics
        # once a whole tick has run since (every counter below was written before the paused job was submitted)
        ticks = metric(seen, "jobqueue_manager_tick_seconds_count")

        async def next_tick():
            text = await scraped()
            return text if text and metric(text, "jobqueue_manager_tick_seconds_count") >= ticks + 2 else None

        text = await eventually(next_tick, what="a whole tick after the one that saw the paused job")
        expected = {
            'jobqueue_jobs_enqueued_total{group="default"}': 3, 'jobqueue_jobs_started_total{group="default"}': 4,
            'jobqueue_jobs_succeeded_total{group="default"}': 1, 'jobqueue_jobs_failed_total{group="default"}': 2,
            'jobqueue_jobs_retried_total{group="default"}': 1, 'jobqueue_jobs_succeeded_total{group="tight"}': 1,
            'jobqueue_spilled_bytes_total{group="tight"}': spilled, 'jobqueue_spilled_bytes_total{group="default"}': 0,
            'jobqueue_job_spilled_bytes_count{group="tight"}': 1,
            'jobqueue_job_spilled_bytes_bucket{group="tight",le="0.0"}': 0,
            'jobqueue_job_spilled_bytes_bucket{group="default",le="0.0"}': 1,
            'jobqueue_job_run_seconds_count{group="default",outcome="succeeded"}': 1,
            'jobqueue_job_run_seconds_count{group="default",outcome="failed"}': 2,  # bad, and flaky's last attempt
            'jobqueue_job_queue_wait_seconds_bucket{group="default",le="+Inf"}': 1,
            'jobqueue_queue_ready_jobs{group="paused"}': 1, 'jobqueue_consumers_max{group="default"}': 2,
        }
        assert {k: metric(text, k) for k in expected} == expected
        assert metric(text, "jobqueue_manager_is_leader") == 1
        assert "jobqueue_manager_tick_seconds_count" in text
        assert_dashboard_queries_served_metrics(text)
        assert await asyncio.to_thread(get, ops.bound_port, "/healthz") == (200, "ok\n")
        assert await asyncio.to_thread(get, ops.bound_port, "/readyz") == (200, "ok\n")
        assert (await asyncio.to_thread(get, ops.bound_port, "/nope"))[0] == 404
    finally:
        stop.set()
        await loop
        await backend.aclose(timeout=30)
        await ops.stop()
    reconciler.last_tick_at -= 3600  # a loop that stopped ticking is not live
    assert not reconciler.healthy()


async def test_every_counter_has_a_zero_sample_for_every_group_before_its_first_event(settings, tmp_path, arq_redis):
    """`increase()` only sees the first failure when the series existed before it, at 0."""
    settings = with_groups(settings, tmp_path, {"one": {"max_instances": 0}, "two": {"max_instances": 0}})
    backend = LocalBackend(settings)
    reconciler = Reconciler(arq_redis, settings, load_groups(settings.resource_groups_path), backend)
    ops = OpsServer(0, reconciler.metrics.registry, reconciler.healthy, reconciler.ready, host="127.0.0.1")
    await ops.start()
    try:
        before_tick = (await asyncio.to_thread(get, ops.bound_port, "/metrics"))[1]
        await reconciler.tick()
        status, text = await asyncio.to_thread(get, ops.bound_port, "/metrics")
    finally:
        await backend.aclose()
        await ops.stop()
    assert status == 200
    assert_dashboard_queries_served_metrics(text)
    for page in (before_tick, text):
        for group in ("one", "two"):
            for event in ("enqueued", "started", "succeeded", "failed", "retried", "cancelled", "expired"):
                assert metric(page, f'jobqueue_jobs_{event}_total{{group="{group}"}}') == 0
        for kind in BackendErrorKind:  # a closed set: a sample each from the start
            assert metric(page, f'jobqueue_backend_errors_total{{backend="local",kind="{kind}"}}') == 0
            for name in ("scan_cache_hits", "scan_cache_misses", "scan_cache_evictions", "spilled_bytes",
                         "consumer_oom_kills"):
                assert metric(page, f'jobqueue_{name}_total{{group="{group}"}}') == 0
            for origin in ("cache", "remote"):
                assert metric(page, f'jobqueue_scan_cache_read_bytes_total{{group="{group}",origin="{origin}"}}') == 0
            for outcome in ("succeeded", "failed"):
                assert metric(page, f'jobqueue_job_run_seconds_count{{group="{group}",outcome="{outcome}"}}') == 0


async def test_the_manager_reports_its_tick_age_and_whether_redis_answers(settings, tmp_path, arq_redis):
    settings = with_groups(settings, tmp_path, {"one": {"max_instances": 0}})
    backend = LocalBackend(settings)
    gone = connect_redis(settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"}))
    try:
        reachable = Reconciler(arq_redis, settings, load_groups(settings.resource_groups_path), backend)
        value = reachable.metrics.registry.get_sample_value
        assert value("jobqueue_manager_redis_up") == 0, "unknown before the first tick"
        await reachable.tick()
        assert value("jobqueue_manager_redis_up") == 1
        assert 0 <= (value("jobqueue_manager_last_tick_age_seconds") or -1) < 60
        reachable.last_tick_at -= 600  # ten minutes without a tick
        assert (value("jobqueue_manager_last_tick_age_seconds") or 0) >= 600
        unreachable = Reconciler(gone, settings, load_groups(settings.resource_groups_path), backend)
        unreachable.metrics.redis_reached(True)  # as after an earlier good tick
        with pytest.raises(REDIS_UNREACHABLE):
            await unreachable.tick()
        assert unreachable.metrics.registry.get_sample_value("jobqueue_manager_redis_up") == 0
    finally:
        await gone.aclose()
        await backend.aclose()


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
async def test_probes_fail_when_unhealthy(path):
    from prometheus_client import CollectorRegistry

    async def not_ready() -> bool:
        raise ConnectionError("redis down")

    ops = OpsServer(0, CollectorRegistry(), lambda: False, not_ready, host="127.0.0.1")
    await ops.start()
    try:
        assert (await asyncio.to_thread(get, ops.bound_port, path))[0] == 503
    finally:
        await ops.stop()
