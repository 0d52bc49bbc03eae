"""The schedules the manager publishes and their run state, read and flagged from outside the manager: what
`GET /v1/schedules` and `…/runs` show and run now, pause and resume write. I/O: Redis (`<p>schedules`,
`<p>schedule:<name>`, `<p>schedule-runs:<name>`).

The manager's scheduler owns everything else of a schedule; a flag written here is taken at its next tick.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

from redis.asyncio import Redis

from jobqueue.errors import JobQueueError
from jobqueue.keys import FALSE, SCHEDULE_ERRORS_FIELD, TRUE, Keys, ScheduleField
from jobqueue.schedules import ScheduledQuery


class UnknownScheduleError(JobQueueError, KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class PublishedSchedules:
    definitions: dict[str, ScheduledQuery]
    errors: list[str]  # schedules the manager could not load


async def published_schedules(redis: Redis, keys: Keys) -> PublishedSchedules:
    raw = {k.decode(): v.decode() for k, v in
           (await cast(Awaitable[dict[bytes, bytes]], redis.hgetall(keys.schedules))).items()}
    errors = json.loads(raw.pop(SCHEDULE_ERRORS_FIELD, "[]"))
    return PublishedSchedules({n: ScheduledQuery.model_validate_json(b) for n, b in raw.items()}, errors)


async def schedule_state(redis: Redis, keys: Keys, name: str) -> dict[str, str]:
    """The `ScheduleField`s of one schedule (checkpoint, paused, last job ...) that are set."""
    raw = await cast(Awaitable[dict[bytes, bytes]], redis.hgetall(keys.schedule(name)))
    return {k.decode(): v.decode() for k, v in raw.items()}


async def known_schedule(redis: Redis, keys: Keys, name: str) -> ScheduledQuery:
    """The published definition of `name`; `UnknownScheduleError` names the known schedules."""
    published = await published_schedules(redis, keys)
    if name not in published.definitions:
        known = (", ".join(sorted(published.definitions))
                 or "none (is the manager running with JOBQUEUE_SCHEDULES_PATH?)")
        raise UnknownScheduleError(f"no schedule {name!r}; known schedules: {known}")
    return published.definitions[name]


async def run_ids(redis: Redis, keys: Keys, name: str, limit: int) -> list[str]:
    """The job ids of the last `limit` runs of a published schedule, newest first."""
    await known_schedule(redis, keys, name)
    return [i.decode() for i in await redis.zrevrange(keys.schedule_runs(name), 0, limit - 1)]


async def _flag(redis: Redis, keys: Keys, name: str, field: ScheduleField, value: str) -> None:
    await known_schedule(redis, keys, name)
    await cast(Awaitable[int], redis.hset(keys.schedule(name), field, value))


async def request_run(redis: Redis, keys: Keys, name: str) -> None:
    """The manager submits a run at its next tick."""
    await _flag(redis, keys, name, ScheduleField.RUN_REQUESTED, datetime.now(UTC).isoformat())


async def set_paused(redis: Redis, keys: Keys, name: str, paused: bool) -> None:
    """Paused: no runs until resumed, and due times meanwhile are not caught up."""
    await _flag(redis, keys, name, ScheduleField.PAUSED, TRUE if paused else FALSE)
