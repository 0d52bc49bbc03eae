"""Observe every resource group's queue and consumers in one pipelined Redis round trip.

`read_groups` does the I/O; `summarize` turns raw replies into a frozen `GroupObservation` and is
pure, so the counting rules are unit-tested without Redis:
- ready    = queued jobs due now that no consumer is running (arq keeps running jobs in the queue)
- deferred = queued jobs due later (they do not wake consumers)
- in flight = jobs a live consumer is running; entries of consumers with no fresh heartbeat are
  reported as orphaned (the reaper of a later issue re-queues them)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from pydantic import ValidationError
from redis.asyncio import Redis

from jobqueue.keys import Keys
from jobqueue.models import ConsumerInfo
from manager.policy import QueueStats


@dataclass(frozen=True)
class GroupObservation:
    group: str
    stats: QueueStats
    consumers: tuple[ConsumerInfo, ...]  # live (fresh heartbeat)
    stale_consumers: tuple[str, ...]  # ids whose heartbeat is too old or unreadable
    orphaned_jobs: tuple[str, ...]  # running entries whose consumer is gone
    oldest_ready_ms: int | None

    busy_ids: frozenset[str] = frozenset()
    running: Mapping[str, str] = field(default_factory=dict)  # job id -> consumer id, live or not


def summarize(
    group: str,
    ready_total: int,
    deferred: int,
    running: dict[str, str],
    consumers_raw: dict[str, str],
    oldest_ready_ms: int | None,
    now: float,
    stale_after: float,
) -> GroupObservation:
    live: list[ConsumerInfo] = []
    stale: list[str] = []
    for consumer_id, raw in consumers_raw.items():
        try:
            info = ConsumerInfo.model_validate_json(raw)
        except ValidationError:
            stale.append(consumer_id)
            continue
        if now - info.seen_at > stale_after:
            stale.append(consumer_id)
        else:
            live.append(info)
    live_ids = {c.consumer_id for c in live}
    in_flight = [job for job, owner in running.items() if owner in live_ids]
    orphaned = [job for job, owner in running.items() if owner not in live_ids]
    owners = set(running.values())
    # busy = holds a running entry (set atomically with the claim, released with the outcome)
    busy_ids = frozenset(c.consumer_id for c in live if c.consumer_id in owners)
    stats = QueueStats(
        ready=max(0, ready_total - len(running)),
        in_flight=len(in_flight),
        deferred=deferred,
        busy_consumers=len(busy_ids),
    )
    return GroupObservation(
        group, stats, tuple(live), tuple(stale), tuple(orphaned), oldest_ready_ms, busy_ids, running
    )


def _decode(mapping: dict[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in mapping.items()}


async def read_groups(
    redis: Redis, keys: Keys, groups: Iterable[str], now: float, stale_after: float
) -> dict[str, GroupObservation]:
    names = list(groups)
    now_ms = int(now * 1000)
    async with redis.pipeline(transaction=False) as pipe:
        for g in names:
            pipe.zcount(keys.queue(g), "-inf", now_ms)
            pipe.zcount(keys.queue(g), f"({now_ms}", "+inf")
            pipe.hgetall(keys.running(g))
            pipe.hgetall(keys.consumers(g))
            pipe.zrangebyscore(keys.queue(g), "-inf", now_ms, start=0, num=1, withscores=True)
        replies = await pipe.execute()
    out: dict[str, GroupObservation] = {}
    for i, g in enumerate(names):
        ready_total, deferred, running, consumers, oldest = replies[i * 5 : i * 5 + 5]
        out[g] = summarize(
            g, int(ready_total), int(deferred), _decode(running), _decode(consumers),
            int(oldest[0][1]) if oldest else None, now, stale_after,
        )
    return out
