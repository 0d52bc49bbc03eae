"""The manager scales a group to the jobs that can run: due jobs whose team runs its limit in the group (held: no
consumer may take them) are not counted as ready. The real observe script on a real Redis, the Kubernetes
emulator's Deployment observed (ticks by hand). The held jobs are shown beside the ready ones wherever a group's queue
is: `jobqueue status`, `GET /v1/groups` and the console's queues page."""

from __future__ import annotations

import asyncio
import io
import json
import re
from collections.abc import AsyncIterator

import httpx
import pytest
from rich.console import Console

from bench.consumer_overhead import REGISTRY
from bench.fair_share import submit
from jobqueue import AsyncJobQueueClient
from jobqueue.api.server import api_in_thread
from jobqueue.api.wire import HELD_MEANING
from jobqueue.auth.identity import Role
from jobqueue.cli.status import render_status
from jobqueue.fair_share import limits_json
from jobqueue.keys import GroupState
from jobqueue.quotas import TeamQuota
from jobqueue.settings import Settings
from manager.observe import read_groups
from manager.reconcile import Reconciler
from tests.api_support import bearer, make_token
from tests.console_support import sign_in
from tests.helpers import mark_busy, with_groups
from tests.integration.test_cli_jobs import cli
from tests.integration.test_console_ops import cell
from tests.integration.test_kubernetes_backend import NS
from tests.kube_emulator import ClusterEmulator
from tests.kube_support import emulated_reconciler, replicas


@pytest.fixture
async def kube(settings: Settings, tmp_path) -> AsyncIterator[tuple[ClusterEmulator, Reconciler, AsyncJobQueueClient]]:
    settings = with_groups(settings, tmp_path, {"etl": {"max_instances": 8}}, scaler_backend="kubernetes",
                           kubernetes_namespace=NS, kubernetes_consumer_image="jobqueue:test",
                           scale_down_stabilization_seconds=0.0, scale_to_zero_cooldown_seconds=0.0,
                           quota_max_running_per_team=2, quota_team_overrides={"ml": TeamQuota(max_running=3)},
                           fair_share=False)  # FIFO: the queue's order is the order of submission
    async with emulated_reconciler(settings, registry=REGISTRY) as (emulator, reconciler, client):
        await reconciler.publish_groups()
        yield emulator, reconciler, client


async def test_the_group_scales_to_the_jobs_that_can_run_not_to_those_held_by_a_team_limit(kube) -> None:
    emulator, reconciler, client = kube
    limits = limits_json(client.settings)
    risk = await submit(client, "rita", 12, team="risk", group="etl")  # limit 2
    for pod, job in zip(("pod-a", "pod-b"), risk, strict=False):  # two run: team risk is at its limit
        assert (await client.store.claim(job, pod, "etl", 60, limits)).claimed
        await mark_busy(client.redis, client.keys, "etl", pod, job)
    await submit(client, "mo", 1, team="ml", group="etl")  # its team has room (3)
    await submit(client, "nat", 1, group="etl")  # no team: no limit
    await reconciler.tick()
    # 2 in flight + the 2 that can start; the 10 of risk still queued wait for a risk job to end
    assert replicas(emulator) == 4
    state = GroupState.from_json(await client.redis.hget(client.keys.group_states, "etl"))
    assert (state.ready, state.held, state.in_flight, state.desired) == (2, 10, 2, 4), state
    assert "10 held by team limits" in state.detail
    sample = reconciler.metrics.registry.get_sample_value
    assert (sample("jobqueue_queue_held_jobs", {"group": "etl"}), sample("jobqueue_queue_ready_jobs", {"group": "etl"})
            ) == (10, 2)

    # team ml's room is counted as a consumer's take counts it: 3 may run, the 4th and later are held
    await submit(client, "mo", 4, team="ml", group="etl")
    await reconciler.tick()
    state = GroupState.from_json(await client.redis.hget(client.keys.group_states, "etl"))
    assert (state.ready, state.held, state.desired) == (4, 12, 6), state
    assert replicas(emulator) == 6


async def test_held_jobs_are_looked_for_only_until_the_group_could_use_no_more(kube) -> None:
    """Past `want` takeable jobs (the most the group can run), the rest count as ready unread: bounded work."""
    _, _, client = kube
    keys, limits = client.keys, limits_json(client.settings)
    await submit(client, "nat", 5, group="etl")  # no team: all takeable, ahead of risk's
    risk = await submit(client, "rita", 6, team="risk", group="etl")
    for pod, job in zip(("pod-a", "pod-b"), risk, strict=False):
        assert (await client.store.claim(job, pod, "etl", 60, limits)).claimed
        await mark_busy(client.redis, keys, "etl", pod, job)
    now = (await client.redis.time())[0] + 1.0
    whole = await read_groups(client.redis, keys, ["etl"], now, 60.0, team_limits=limits, wants={"etl": 100})
    assert (whole["etl"].stats.ready, whole["etl"].stats.held) == (5, 4)
    cut = await read_groups(client.redis, keys, ["etl"], now, 60.0, team_limits=limits, wants={"etl": 3})
    assert (cut["etl"].stats.ready, cut["etl"].stats.held) == (9, 0)
    plain = await read_groups(client.redis, keys, ["etl"], now, 60.0)  # no limits configured: none held
    assert (plain["etl"].stats.ready, plain["etl"].stats.held) == (9, 0)
    assert json.loads(limits)["default"] == 2


async def test_held_jobs_have_their_own_column_in_status_the_api_and_the_console(kube, redis_url, tmp_path) -> None:
    """`jobqueue status` (table, cards and --json), `GET /v1/groups` (and its schema) and the console's queues page
    show the held jobs beside the ready ones, saying what held means, not only inside the decision's text."""
    _, reconciler, client = kube
    settings, limits = client.settings, limits_json(client.settings)
    risk = await submit(client, "rita", 7, team="risk", group="etl")  # limit 2
    for pod, job in zip(("pod-a", "pod-b"), risk, strict=False):
        assert (await client.store.claim(job, pod, "etl", 60, limits)).claimed
        await mark_busy(client.redis, client.keys, "etl", pod, job)
    await submit(client, "nat", 1, group="etl")  # no team: ready
    await reconciler.tick()

    code, out = await asyncio.to_thread(cli, redis_url, settings.environment, tmp_path, "status", "--json")
    assert code == 0, out
    row = next(r for r in json.loads(out) if r["group"] == "etl")
    assert (row["ready"], row["held"], row["in_flight"], row["deferred"]) == (1, 5, 2, 0), row
    code, out = await asyncio.to_thread(cli, redis_url, settings.environment, tmp_path, "status")
    assert code == 0, out
    header = next(line.split() for line in out.splitlines() if line.split()[:2] == ["group", "min"])
    cells = next(line.split() for line in out.splitlines() if line.split()[:1] == ["etl"])
    assert header[7:9] == ["ready", "held"] and cells[7:11] == ["1", "5", "2", "0"], out
    assert f"held ({HELD_MEANING})" in " ".join(out.split()), out
    narrow = Console(width=80, record=True, file=io.StringIO())
    narrow.print(render_status([row], narrow))
    assert re.search(r"jobs\s+ready 1\s+held 5\s+in flight 2", narrow.export_text()), narrow.export_text()

    token = await make_token(settings, "alice", Role.USER)
    with api_in_thread(settings, port=0) as url:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            groups = (await http.get("/v1/groups", headers=bearer(token))).json()
            assert [(g["ready"], g["held"]) for g in groups if g["group"] == "etl"] == [(1, 5)], groups
            schema = (await http.get("/openapi.json")).json()["components"]["schemas"]["GroupStatus"]
            assert HELD_MEANING in schema["properties"]["held"]["description"]
            await sign_in(http, token)
            page = (await http.get("/queues")).text
    assert (cell(page, "etl", "ready"), cell(page, "etl", "held"), cell(page, "etl", "in_flight")) == ("1", "5", "2")
    assert f'<th scope="col" title="{HELD_MEANING}">Held</th>' in page and f"Held: {HELD_MEANING}" in page
    assert "queue depth of etl (held included) over the last hour" in cell(page, "etl", "depth-history")
