"""The local backend on real processes: idle consumers go first, busy ones never; crashes are replaced."""

from __future__ import annotations

import os
import signal
import time

from jobqueue.groups import ResourceGroup
from jobqueue.keys import Keys
from manager.backends.local import LocalBackend
from manager.observe import read_groups
from tests.helpers import consumers_registered, eventually, running_manager, with_groups


async def test_scale_down_stops_idle_consumers_and_never_a_busy_one(settings, arq_redis):
    keys = Keys.for_environment(settings.environment)
    group = ResourceGroup(name="default", max_instances=3)
    backend = LocalBackend(settings)
    try:
        observed = (await read_groups(arq_redis, keys, ["default"], time.time(), 15))["default"]
        await backend.converge(group, 3, observed)
        assert len(backend.active("default")) == 3

        await consumers_registered(arq_redis, keys, "default", 3)
        busy = backend.active("default")[0]
        await arq_redis.hset(keys.running("default"), "some-job", busy.consumer_id)  # as its job_started hook does
        observed = (await read_groups(arq_redis, keys, ["default"], time.time(), 15))["default"]
        assert observed.busy_ids == {busy.consumer_id}

        others = [c for c in backend.active("default") if c is not busy]
        await backend.converge(group, 1, observed)
        assert backend.active("default") == [busy]
        assert all(c.process.wait(timeout=30) == 0 for c in others), "idle consumers drain and exit cleanly"

        await backend.converge(group, 0, observed)  # even asked for zero, the busy one stays
        assert backend.active("default") == [busy] and busy.process.poll() is None
    finally:
        await backend.aclose(timeout=30)
    assert busy.process.returncode == 0


async def test_a_killed_consumer_is_replaced_on_the_next_tick(settings, tmp_path):
    settings = with_groups(settings, tmp_path, {"default": {"min_instances": 1, "max_instances": 1}})
    async with running_manager(settings) as backend:
        (first,) = await eventually(lambda: backend.active("default"), what="min_instances consumer")
        os.kill(first.pid, signal.SIGKILL)
        (second,) = await eventually(
            lambda: [c for c in backend.active("default") if c.pid != first.pid], what="replacement consumer"
        )
        assert first.process.wait(timeout=10) == -signal.SIGKILL
        assert second.process.poll() is None
