"""The manager's level-triggered loop: observe every group, decide, act; repeat.

Each tick reads the whole truth again (queues and consumers from Redis, replicas from the
backend), so a crash or restart at any point converges on the next tick. Per-group failures
are logged and do not stop other groups. The tick wakes early when the SDK announces a
submission on the events channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio import Redis

from jobqueue.groups import ResourceGroup
from jobqueue.jobstore import JobStore
from jobqueue.keys import Keys
from jobqueue.logs import get_logger
from jobqueue.settings import Settings
from manager.backends.base import ScalerBackend
from manager.metrics import ManagerMetrics
from manager.observe import GroupObservation, read_groups
from manager.policy import Decision, ScaleState, ScalingSpec, decide
from manager.reaper import Reaper
from manager.scheduler import Scheduler

log = get_logger("jobqueue.manager")


@dataclass(frozen=True)
class GroupStatus:
    observed: GroupObservation
    current: int
    decision: Decision


class Reconciler:
    def __init__(
        self,
        redis: Redis,
        settings: Settings,
        groups: dict[str, ResourceGroup],
        backend: ScalerBackend,
        clock: Callable[[], float] = time.time,
        scheduler: Scheduler | None = None,
        metrics: ManagerMetrics | None = None,
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.keys = Keys.for_environment(settings.environment)
        self.groups = groups
        self.backend = backend
        self.clock = clock
        self.scheduler = scheduler
        self.metrics = metrics or ManagerMetrics()
        self.last_tick_at = time.monotonic()
        self.states: dict[str, ScaleState] = {}
        self.last: dict[str, GroupStatus] = {}
        store = JobStore(redis, self.keys, settings.job_ttl_seconds)
        self.reaper = Reaper(redis, self.keys, store, settings.job_heartbeat_ttl_seconds)

    def spec(self, group: ResourceGroup) -> ScalingSpec:
        return ScalingSpec(
            min_instances=group.min_instances,
            max_instances=group.max_instances,
            jobs_per_consumer=group.jobs_per_consumer,
            stabilization_seconds=self.settings.scale_down_stabilization_seconds,
            cooldown_seconds=self.settings.scale_to_zero_cooldown_seconds,
        )

    async def publish_groups(self) -> None:
        """Tell SDKs which groups exist (they validate `resource_group` against this)."""
        key = self.keys.groups
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.hset(key, mapping={name: g.model_dump_json() for name, g in self.groups.items()})
            await pipe.execute()

    async def tick(self) -> dict[str, GroupStatus]:
        started = time.perf_counter()
        await self.reaper.run(list(self.groups))
        now = self.clock()
        observed = await read_groups(
            self.redis, self.keys, self.groups, now, self.settings.consumer_stale_seconds
        )
        for name, group in self.groups.items():
            try:
                status = self.last[name] = await self._reconcile_group(group, observed[name], now)
                self.metrics.observe_group(group, status.observed, status.current, status.decision, now)
            except Exception as e:
                self.metrics.backend_errors.labels(self.backend.name, type(e).__name__).inc()
                log.exception("reconcile failed for group", group=name)
        raw = await self.redis.hgetall(self.keys.counters)
        self.metrics.counters.snapshot = {k.decode(): float(v) for k, v in raw.items()}
        self.metrics.leader.set(1)
        self.metrics.tick.observe(time.perf_counter() - started)
        self.last_tick_at = time.monotonic()
        return self.last

    async def _reconcile_group(self, group: ResourceGroup, obs: GroupObservation, now: float) -> GroupStatus:
        current = await self.backend.current_replicas(group.name)
        decision = decide(obs.stats, self.spec(group), current, self.states.get(group.name, ScaleState()), now)
        self.states[group.name] = decision.state
        if decision.replicas != current:
            log.info(
                "scaling", group=group.name, direction=decision.direction, current=current,
                desired=decision.replicas, reason=decision.reason, detail=decision.detail,
            )
            await self.backend.scale(group, decision.replicas, obs)
        if obs.stale_consumers:
            await self.redis.hdel(self.keys.consumers(group.name), *obs.stale_consumers)
        state = {
            "at": now, "current": current, "desired": decision.replicas, "direction": decision.direction,
            "reason": decision.reason, "detail": decision.detail, "ready": obs.stats.ready,
            "in_flight": obs.stats.in_flight, "deferred": obs.stats.deferred,
            "busy": obs.stats.busy_consumers, "orphaned": len(obs.orphaned_jobs),
            "oldest_wait_seconds": round(max(0.0, now - obs.oldest_ready_ms / 1000), 1) if obs.oldest_ready_ms else 0,
        }
        await self.redis.hset(self.keys.group_state(group.name), "state", json.dumps(state))
        return GroupStatus(obs, current, decision)

    def healthy(self) -> bool:
        """Liveness: the loop has completed a tick recently."""
        return time.monotonic() - self.last_tick_at < max(30.0, 20 * self.settings.manager_tick_seconds)

    async def ready(self) -> bool:
        """Readiness: Redis answers."""
        return bool(await self.redis.ping())

    async def run(self, stop: asyncio.Event) -> None:
        """Tick until `stop` is set; a submission notification cuts the wait short."""
        await self.publish_groups()
        if self.scheduler is not None:
            await self.scheduler.publish()
        wake = asyncio.Event()
        listener = asyncio.create_task(self._listen(wake), name="events")
        try:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    if self.scheduler is not None:  # before scaling, so a fired run is seen this tick
                        await self.scheduler.tick()
                    await self.tick()
                except Exception:  # e.g. Redis down: log, back off a tick, try again
                    log.exception("tick failed")
                delay = max(0.0, self.settings.manager_tick_seconds - (time.monotonic() - started))
                wake.clear()
                waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
                await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
                for w in waiters:
                    w.cancel()
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    async def _listen(self, wake: asyncio.Event) -> None:
        while True:
            try:
                async with self.redis.pubsub() as pubsub:
                    await pubsub.subscribe(self.keys.events)
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            wake.set()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("event subscription lost; retrying", exc_info=True)
                await asyncio.sleep(1.0)
