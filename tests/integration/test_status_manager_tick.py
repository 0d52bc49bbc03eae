"""`jobqueue status` shows the manager's last tick age, and warns when no manager ticks (queued jobs wait)."""

from __future__ import annotations

import asyncio
import json

from tests.integration.test_cli_jobs import cli


async def test_status_shows_the_manager_tick_age_and_warns_when_stale(settings, redis_url, environment, tmp_path):
    from tests.helpers import eventually, running_manager

    async with running_manager(settings):
        async def ticking():
            code, out = await asyncio.to_thread(cli, redis_url, environment, tmp_path, "status", "--json")
            return out if code == 0 and json.loads(out) else None

        await eventually(ticking, what="the manager's first tick")
        code, out = await asyncio.to_thread(cli, redis_url, environment, tmp_path, "status")
        assert code == 0 and "manager: last tick" in out and "warning" not in out, out

    async def stale():  # the manager stopped: past 10 ticks (at least 5 s) status says so
        code, out = await asyncio.to_thread(cli, redis_url, environment, tmp_path, "status", "--json")
        rows = json.loads(out) if code == 0 else []
        return rows if rows and rows[0]["manager_stale"] else None

    rows = await eventually(stale, what="status calling the manager stale")
    assert rows[0]["manager_tick_age_seconds"] > 5
    code, out = cli(redis_url, environment, tmp_path, "status")
    assert code == 0 and "no manager has ticked for" in out and "jobqueue up" in out, out
