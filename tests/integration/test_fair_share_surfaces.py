"""Priorities and team-limit wait reasons where users meet them: the SDK over HTTP (the API's `priority` query
parameter), `GET /v1/jobs/{id}` (`wait_reason`), the console's job page and `jobqueue jobs show`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx
import pytest

from jobqueue import AsyncJobQueueClient
from jobqueue.api.server import api_in_thread
from jobqueue.auth.identity import Role
from jobqueue.errors import InvalidQueryError
from jobqueue.fair_share import limits_json
from jobqueue.keys import MANAGER_TICK_AT, Keys
from jobqueue.models import JobStatus, Priority
from jobqueue.settings import Settings
from tests.api_support import bearer, make_token
from tests.console_support import sign_in

REASON = "waiting: team risk at its limit of 1 running"


async def test_priority_over_http_and_the_team_limit_reason_everywhere(settings: Settings, tmp_path) -> None:
    limited = settings.model_copy(update={"quota_max_running_per_team": 1})
    keys = Keys.for_environment(settings.environment)
    token = await make_token(limited, "rita", Role.USER, "risk")
    with api_in_thread(limited, port=0) as url:
        async with AsyncJobQueueClient(limited, api_url=url, token=token) as remote:
            first = await remote.offline_query({"user.id": [1]}, ["user.f0"], priority="high")
            second = await remote.offline_query({"user.id": [2]}, ["user.f0"], priority=Priority.LOW)
            with pytest.raises(InvalidQueryError, match="priority"):
                await remote.offline_query({"user.id": [3]}, ["user.f0"], priority="urgent")
            assert (await remote.get_job(first.id)).priority is Priority.HIGH
        async with AsyncJobQueueClient(limited, direct=True) as direct:
            # a consumer's claim runs the first (the real script); a manager has ticked and publishes the group
            claim = await direct.store.claim(first.id, "c1", "default", 60, limits_json(limited))
            assert claim.claimed
            await direct.redis.hset(keys.manager_state, MANAGER_TICK_AT, str(time.time() + 3600))
            await direct.redis.hset(keys.groups, "default", json.dumps({"max_instances": 4}))
            assert not (await direct.store.claim(second.id, "c2", "default", 60, limits_json(limited))).claimed
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            got = (await http.get(f"/v1/jobs/{second.id}", headers=bearer(token))).json()
            assert got["status"] == JobStatus.QUEUED and got["priority"] == "low"
            assert got["wait_reason"]["code"] == "team_limit" and got["wait_reason"]["message"].startswith(REASON)
            await sign_in(http, token)
            page = (await http.get(f"/jobs/{second.id}")).text
            assert REASON in page and 'data-testid="priority">low<' in page
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBQUEUE_")}
    env.update(JOBQUEUE_REDIS_URL=settings.redis_url or "", JOBQUEUE_ENVIRONMENT=settings.environment,
               JOBQUEUE_HOME=str(tmp_path), JOBQUEUE_QUOTA_MAX_RUNNING_PER_TEAM="1", COLUMNS="200")
    shown = subprocess.run([sys.executable, "-m", "jobqueue.cli.main", "jobs", "show", second.id], env=env,
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    out = " ".join(shown.stdout.split())
    assert REASON in out and "priority low" in out, out
