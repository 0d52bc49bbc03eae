"""Read what a queued job waits for from Redis, for `jobqueue.waiting.why_waiting` (which is pure).

Two round trips: the manager's last tick, the group as published and as last decided, the group's consumers and
the job's queue entry in one pipeline; then the queue ranks of the group's running jobs (arq keeps running jobs in
the queue, so they are not ahead of this one).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable
from dataclasses import replace
from typing import Any, cast

from pydantic import ValidationError
from redis.asyncio import Redis

from jobqueue.fair_share import team_limit_message, team_running_limit
from jobqueue.keys import MANAGER_TICK_AT, GroupState, JobField, Keys
from jobqueue.models import ConsumerInfo, JobRecord, WaitReason
from jobqueue.settings import Settings
from jobqueue.waiting import GroupLimits, WaitSnapshot, manager_stale_after, why_waiting


async def wait_reason(redis: Redis, settings: Settings, record: JobRecord, now: float) -> WaitReason:
    """Why the queued job of `record` is not running at `now` (epoch seconds)."""
    keys = Keys.for_environment(settings.environment)
    snap = await read_wait_snapshot(redis, keys, settings.environment, record.job_id, record.resource_group)
    limit, setting = team_running_limit(settings, record.team)
    if record.team and limit > 0 and await team_running(redis, keys, record.resource_group, record.team) >= limit:
        snap = replace(snap, team_limit=team_limit_message(record.team, limit, setting))
    return why_waiting(snap, now, manager_stale=manager_stale_after(settings.manager_tick_seconds),
                       consumer_stale=settings.consumer_stale_seconds)


async def read_wait_snapshot(redis: Redis, keys: Keys, environment: str, job_id: str, group: str) -> WaitSnapshot:
    member, queue = keys.arq_id(job_id), keys.queue(group)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hget(keys.manager_state, MANAGER_TICK_AT)
        pipe.hlen(keys.groups)
        pipe.hget(keys.groups, group)
        pipe.hget(keys.group_states, group)
        pipe.hvals(keys.consumers(group))
        pipe.zscore(queue, member)
        pipe.zrank(queue, member)
        pipe.hkeys(keys.running(group))
        tick, published, config, state, consumers, score, rank, running = await pipe.execute()
    ahead = 0
    if rank is not None:
        ahead = rank
        if running:  # running jobs stay in the queue until done: those before this one are not waiting ahead of it
            async with redis.pipeline(transaction=False) as pipe:
                for job in running:
                    pipe.zrank(queue, keys.arq_id(job.decode(errors="replace")))
                ahead -= sum(1 for r in await pipe.execute() if r is not None and r < rank)
    return WaitSnapshot(
        environment=environment, group=group, manager_tick_at=float(tick) if tick else None,
        groups_published=published > 0, limits=_limits(config), state=_state(state),
        consumers=tuple(c for c in map(_consumer, consumers) if c is not None), jobs_ahead=max(0, ahead),
        due_at=score / 1000 if score is not None else None,
    )


async def team_running(redis: Redis, keys: Keys, group: str, team: str) -> int:
    """How many jobs of `team` run in `group` now (what the consumers' take and claim count)."""
    running = await cast(Awaitable[list[bytes]], redis.hkeys(keys.running(group)))
    if not running:
        return 0
    async with redis.pipeline(transaction=False) as pipe:
        for job in running:
            pipe.hget(keys.job(job.decode(errors="replace")), JobField.TEAM)
        teams = await pipe.execute()
    return sum(1 for t in teams if t is not None and _json_text(t) == team)


def _json_text(raw: bytes) -> str | None:
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, str) else None


def _limits(raw: bytes | None) -> GroupLimits | None:
    if raw is None:
        return None
    try:
        config: dict[str, Any] = json.loads(raw)
        return GroupLimits(int(config["max_instances"]), int(config.get("jobs_per_consumer", 1)))
    except (ValueError, TypeError, KeyError):
        return None  # not a group this version can read: as if unknown


def _state(raw: bytes | None) -> GroupState | None:
    try:
        return GroupState.from_json(raw) if raw is not None else None
    except (ValueError, TypeError):
        return None


def _consumer(raw: bytes) -> ConsumerInfo | None:
    try:
        return ConsumerInfo.model_validate_json(raw)
    except ValidationError:
        return None  # the manager drops an unreadable heartbeat; it is no consumer
