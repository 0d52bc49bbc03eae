"""Each group's bounds, consumers and queue with the manager's last decision: what `jobqueue status` and
`GET /v1/groups` show. I/O: reads Redis (the groups and group states the manager publishes), writes nothing."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable
from typing import Any, cast

from redis.asyncio import Redis

from jobqueue.keys import MANAGER_TICK_AT, GroupState, Keys
from jobqueue.settings import Settings
from jobqueue.waiting import manager_stale_after


def _hash(redis: Redis, key: str) -> Awaitable[dict[bytes, bytes]]:
    return cast(Awaitable[dict[bytes, bytes]], redis.hgetall(key))  # redis-py types the async reply as sync-or-async


def stale_after(settings: Settings) -> float:
    """A manager tick older than this means no manager runs: queued jobs wait (`waiting.manager_stale_after`)."""
    return manager_stale_after(settings.manager_tick_seconds)


async def group_rows(redis: Redis, keys: Keys, settings: Settings) -> list[dict[str, Any]]:
    """One row per group, sorted by name (the keys of `jobqueue status --json`)."""
    groups = {k.decode(): json.loads(v) for k, v in (await _hash(redis, keys.groups)).items()}
    states = {k.decode(): GroupState.from_json(v) for k, v in (await _hash(redis, keys.group_states)).items()}
    tick = await cast(Awaitable[bytes | None], redis.hget(keys.manager_state, MANAGER_TICK_AT))
    tick_at = float(tick) if tick else None
    tick_age = round(time.time() - tick_at, 1) if tick_at else None
    rows = []
    for name in sorted(set(groups) | set(states)):
        state, config = states.get(name), groups.get(name, {})
        oldest = state.oldest_ready_at if state else None
        rows.append({
            "group": name,
            "min": config.get("min_instances"),
            "max": config.get("max_instances"),
            "desired": state.desired if state else None,
            "current": state.current if state else None,
            "busy": state.busy if state else None,
            "ready": state.ready if state else None,
            "in_flight": state.in_flight if state else None,
            "deferred": state.deferred if state else None,
            "held": state.held if state else None,
            "consumers_ready": state.live if state else None,
            "oldest_wait_seconds": round(max(0.0, tick_at - oldest), 1) if oldest and tick_at else 0,
            "decision": state.reason if state else None,
            "detail": state.detail if state else None,
            "error": state.error if state else None,
            "start_trouble": state.start_trouble if state else None,
            "configured": state.configured if state else True,
            "age_seconds": tick_age if state else None,
            "manager_tick_age_seconds": tick_age,
            "manager_stale": tick_age is None or tick_age > stale_after(settings),
            "scaled_age_seconds": round(max(0.0, time.time() - state.scaled_at), 1) if state and state.scaled_at
            else None,
            "scaled_from": state.scaled_from if state else None,
            "scaled_to": state.scaled_to if state else None,
            "scaled_reason": (state.scaled_reason or None) if state else None,
            "scaled_detail": (state.scaled_detail or None) if state else None,
        })
    return rows
