"""The manager's level-triggered loop: observe every group, decide, act; repeat.

Each tick reads the whole truth again (queues and consumers from Redis, replicas from the
backend), so a crash or restart at any point converges on the next tick. Per-group failures
are logged and do not stop other groups. The tick wakes early when the SDK announces a
submission on the events channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from redis.asyncio import Redis

from jobqueue.clock import Clock, system_clock
from jobqueue.errors import ConfigError
from jobqueue.fair_share import limits_json
from jobqueue.groups import GroupsConfig, ResourceGroup, load_groups_config
from jobqueue.jobstore import JobStore
from jobqueue.keys import MANAGER_TICK_AT, GroupState, Keys
from jobqueue.logs import capped, get_logger
from jobqueue.outage import REDIS_UNREACHABLE, Outage
from jobqueue.settings import Settings
from jobqueue.storage import Storage
from manager.backends.base import ScalerBackend
from manager.group_history import GroupHistory
from manager.metrics import ManagerMetrics
from manager.observe import GroupObservation, ObservationCache, observe_in_chunks
from manager.policy import Decision, ScaleState, ScalingSpec, decide, hold_steady
from manager.reaper import Reaper
from manager.scheduler import Scheduler

log = get_logger("jobqueue.manager")


class GroupStatus(NamedTuple):
    observed: GroupObservation
    current: int
    decision: Decision


class Reconciler:
    def __init__(
        self,
        redis: Redis,
        settings: Settings,
        groups: dict[str, ResourceGroup] | GroupsConfig,
        backend: ScalerBackend,
        clock: Clock = system_clock,
        scheduler: Scheduler | None = None,
        metrics: ManagerMetrics | None = None,
        groups_path: Path | None = None,
        leader: Callable[[], bool] | None = None,
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.keys = Keys.for_environment(settings.environment)
        self.config = groups if isinstance(groups, GroupsConfig) else GroupsConfig(groups)
        self.groups_path = groups_path  # re-read when it changes (a mounted ConfigMap)
        self._groups_mtime = groups_path.stat().st_mtime_ns if groups_path else None
        self.backend = backend
        self.clock = clock  # the time of every decision: the reaper, the scheduler and the job records go by it too
        self.scheduler = scheduler
        self.metrics = metrics or ManagerMetrics(settings.metrics_max_teams)
        self.metrics.counters.known_groups = lambda: [*self.groups, *self.config.errors]  # 0 before any event
        self.metrics.serve_backend(backend.name)
        self.leader = leader or (lambda: True)
        self.last_tick_at = time.monotonic()
        self._woken_at = -math.inf  # when a submission last started a tick (`_pause`)
        self.metrics.tick_age.set_function(lambda: time.monotonic() - self.last_tick_at)
        self.states: dict[str, ScaleState] = {}
        self.last: dict[str, GroupStatus] = {}
        self._published: dict[str, GroupState] = {}  # group -> the state last written to Redis
        self._specs: dict[str, tuple[ResourceGroup, ScalingSpec]] = {}
        self._observations = ObservationCache()
        self.team_limits = limits_json(settings)  # jobs of a team at its limit are held: the decision leaves them out
        self._group_errors: dict[str, str] = {}  # group -> the error last logged for it (logged once)
        self._starting_since: dict[str, float] = {}  # group -> since when fewer consumers are live than desired
        self._scaled: dict[str, dict[str, Any]] = {}  # group -> its last change of consumers (`GroupState.scaled_*`)
        self.history = GroupHistory(self.keys, settings.group_history_seconds)
        store = JobStore(redis, self.keys, settings.job_ttl_seconds, clock)
        self.reaper = Reaper(redis, self.keys, store, settings.job_heartbeat_ttl_seconds, Storage(settings),
                             oom_source=backend)

    @property
    def groups(self) -> dict[str, ResourceGroup]:
        return self.config.groups

    def spec(self, group: ResourceGroup) -> ScalingSpec:
        cached = self._specs.get(group.name)
        if cached is None or cached[0] is not group:
            cached = self._specs[group.name] = (group, ScalingSpec(
                min_instances=group.min_instances,
                max_instances=group.max_instances,
                jobs_per_consumer=group.jobs_per_consumer,
                stabilization_seconds=self.settings.scale_down_stabilization_seconds,
                cooldown_seconds=self.settings.scale_to_zero_cooldown_seconds,
            ))
        return cached[1]

    async def publish_groups(self) -> None:
        """Tell SDKs which groups exist (they validate `resource_group` against this)."""
        key = self.keys.groups
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.hset(key, mapping={name: g.model_dump_json() for name, g in self.groups.items()})
            await pipe.execute()

    async def _reload_groups(self) -> None:
        if self.groups_path is None:
            return
        try:
            mtime = self.groups_path.stat().st_mtime_ns
            if mtime == self._groups_mtime:
                return
            self._groups_mtime = mtime
            config = load_groups_config(self.groups_path)
        except (OSError, ConfigError) as e:  # keep running the last good config
            log.error("resource groups file unreadable; keeping the previous config", error=str(e))
            return
        changed = sorted(n for n in set(config.groups) | set(self.groups) if config.groups.get(n) != self.groups.get(n))
        log.info("resource groups reloaded", changed=changed, errors=config.errors)
        self.config = config
        await self.publish_groups()

    async def tick(self) -> dict[str, GroupStatus]:
        """One reconcile of every group; `jobqueue_manager_redis_up` says whether it reached Redis."""
        try:
            last = await self._tick()
        except REDIS_UNREACHABLE:
            self.metrics.redis_reached(False)
            raise
        self.metrics.redis_reached(True)
        return last

    async def _tick(self) -> dict[str, GroupStatus]:
        started = time.perf_counter()
        await self._reload_groups()
        names = set(self.groups) | set(self.config.errors) | self.backend.managed_groups()
        at = self.clock()
        now = at.timestamp()
        observed: dict[str, GroupObservation] = {}
        states: dict[str, GroupState] = {}
        changed: dict[str, str] = {}
        wants = {n: g.max_instances * g.jobs_per_consumer for n, g in self.groups.items()}  # the most that can run
        async for part in observe_in_chunks(self.redis, self.keys, sorted(names), now,
                                            self.settings.consumer_stale_seconds, self._observations,
                                            team_limits=self.team_limits, wants=wants):
            for name, obs in part.items():  # while Redis computes the next part
                observed[name] = obs
                state = states[name] = await self._reconcile_group_isolated(name, obs, now)
                if self._published.get(name) != state:  # steady groups cost no write
                    self._published[name] = state
                    changed[name] = state.to_json()
        # jobs of dead consumers go back to their queue now, and count from the next tick
        await self.reaper.run({g: o.running for g, o in observed.items()}, now=at,
                              unreachable={g: o.unreachable for g, o in observed.items() if o.unreachable},
                              stale={g: o.stale_entries for g, o in observed.items() if o.stale_entries})
        gone = [n for n in self._published if n not in names]
        async with self.redis.pipeline(transaction=False) as pipe:
            for name, obs in observed.items():
                if obs.stale_consumers:
                    pipe.hdel(self.keys.consumers(name), *obs.stale_consumers)
            if changed:
                pipe.hset(self.keys.group_states, mapping=changed)
            if gone:
                pipe.hdel(self.keys.group_states, *gone)
            pipe.hset(self.keys.manager_state, MANAGER_TICK_AT, str(now))
            self.history.record(pipe, states, now)
            pipe.hgetall(self.keys.counters)
            replies = await pipe.execute()
        for name in gone:
            del self._published[name]
            self.last.pop(name, None)
            self._starting_since.pop(name, None)
            self._scaled.pop(name, None)
            self.metrics.forget_group(name)
        self.metrics.counters.snapshot = {k.decode(): float(v) for k, v in replies[-1].items()}
        self.metrics.leader.set(1)
        self.metrics.tick.observe(time.perf_counter() - started)
        self.last_tick_at = time.monotonic()
        return self.last

    def _group_failed(self, name: str, error: str, exc_info: bool = False) -> Decision:
        """A group that could not be observed or reconciled: keep what runs, log each distinct error once."""
        if self._group_errors.get(name) != error:
            self._group_errors[name] = error
            log.error("group failed; the other groups go on", group=name, error=error, exc_info=exc_info)
        current = self.last[name].current if name in self.last else 0
        return Decision(current, "none", "error", error, self.states.get(name, ScaleState()))

    async def _reconcile_group_isolated(self, name: str, obs: GroupObservation, now: float) -> GroupState:
        try:
            state = await self._reconcile_group(name, obs, now)
        except Exception as e:  # outside the backend calls (which report their own): never the other groups'
            decision = self._group_failed(name, capped(f"{type(e).__name__}: {e}"), exc_info=True)
            self.last[name] = GroupStatus(obs, decision.replicas, decision)
            return GroupState(current=decision.replicas, desired=decision.replicas, direction="none", reason="error",
                              detail=decision.detail, error=decision.detail, configured=name in self.groups,
                              **self._scaled.get(name, {}))
        if state.error is None:
            self._group_errors.pop(name, None)
        return state

    async def _reconcile_group(self, name: str, obs: GroupObservation, now: float) -> GroupState:  # noqa: C901
        """Decide and act for one group; a failure is reported in its state and does not stop the others."""
        group = self.groups.get(name)
        prev = self.last.get(name)
        if (group is not None and prev is not None and prev.observed is obs and prev.decision.reason == "steady"
                and self._specs.get(name, (None,))[0] is group
                and await self.backend.current_replicas(name) == prev.current):
            # nothing changed since a steady tick: the same decision, the backend already matches, and
            # the published state and gauges stay as they are
            decision = hold_steady(prev.decision, obs.stats, now)
            self.states[name] = decision.state
            self.last[name] = prev._replace(decision=decision)
            return self._published[name]
        error = self.config.errors.get(name)
        try:
            current = await self.backend.current_replicas(name)
            if obs.error is not None:  # its keys could not be read: hold what runs, until they can
                error = f"observing the group failed: {obs.error}"
                decision = self._group_failed(name, error)._replace(replicas=current)
            elif group is None and error is not None:  # broken config: leave what runs alone until it is fixed
                decision = Decision(current, "none", "config_error", error, ScaleState())
            else:
                spec = self.spec(group) if group is not None else ScalingSpec(0, 0, stabilization_seconds=0,
                                                                             cooldown_seconds=0)
                decision = decide(obs.stats, spec, current, self.states.get(name, ScaleState()), now)
                self.states[name] = decision.state
                if decision.replicas != current and (prev is None or (prev.current, prev.decision.replicas)
                                                     != (current, decision.replicas)):  # once, not every tick
                    log.info(
                        "scaling", group=name, direction=decision.direction, current=current,
                        desired=decision.replicas, reason=decision.reason if group else "removed",
                        detail=decision.detail,
                    )
                    self._scaled[name] = {"scaled_at": now, "scaled_from": current, "scaled_to": decision.replicas,
                                          "scaled_reason": decision.reason if group else "removed",
                                          "scaled_detail": decision.detail}
                if group is not None:
                    await self.backend.converge(group, decision.replicas, obs)
                else:
                    await self.backend.retire(name, decision.replicas, obs)
        except Exception as e:
            self.metrics.backend_error(self.backend.name, e)
            error = capped(f"{type(e).__name__}: {e}")
            decision = self._group_failed(name, error, exc_info=True)
            current = decision.replicas
        self.last[name] = GroupStatus(obs, current, decision)
        self.metrics.observe_group(name, group, obs, current, decision, config_error=name in self.config.errors,
                                   error=decision.reason == "error")
        stats = obs.stats
        trouble = getattr(self.backend, "start_trouble", None)  # the local backend's crash-looping slots
        if decision.replicas > len(obs.consumers):  # consumers asked for and not live yet: the SDK says so
            starting_since: float | None = self._starting_since.setdefault(name, now)
        else:
            self._starting_since.pop(name, None)
            starting_since = None
        return GroupState(
            current=current, desired=decision.replicas, direction=decision.direction, reason=decision.reason,
            detail=decision.detail, ready=stats.ready, in_flight=stats.in_flight, deferred=stats.deferred,
            held=stats.held, busy=stats.busy_consumers, orphaned=len(obs.orphaned_jobs),
            oldest_ready_at=obs.oldest_ready_ms / 1000 if obs.oldest_ready_ms else None, error=error,
            configured=group is not None, live=len(obs.consumers), start_trouble=trouble(name) if trouble else None,
            starting_since=starting_since, **self._scaled.get(name, {}),
        )

    def healthy(self) -> bool:
        """Liveness: the loop has completed a tick recently."""
        return time.monotonic() - self.last_tick_at < max(30.0, 20 * self.settings.manager_tick_seconds)

    async def ready(self) -> bool:
        """Readiness: Redis answers and the backend has its view of the cluster (Kubernetes: informer synced)."""
        synced = getattr(self.backend, "synced", None)
        return bool(await self.redis.ping()) and (synced is None or synced())

    async def run(self, stop: asyncio.Event) -> None:
        """Tick until `stop` is set; a submission notification cuts the wait short."""
        await self.publish_groups()
        if self.scheduler is not None:
            await self.scheduler.publish()
        wake = asyncio.Event()
        outage = Outage(log, "the manager")
        listener = asyncio.create_task(self._listen(wake), name="events")
        try:
            while not stop.is_set():
                started = time.monotonic()
                wake.clear()  # before the tick: a submission announced during it wakes the next one at once
                try:
                    if not self.leader():  # a standby: stay healthy, act only once elected
                        self.metrics.leader.set(0)
                        self.last_tick_at = time.monotonic()
                    else:
                        if self.scheduler is not None:  # before scaling, so a fired run is seen this tick
                            await self.scheduler.tick(self.clock())
                        await self.tick()
                    outage.recovered()
                except REDIS_UNREACHABLE as e:  # Redis down: one line now and then, try again next tick
                    self.metrics.redis_reached(False)
                    outage.failed(e)
                except Exception:
                    log.exception("tick failed")
                await self._pause(stop, wake, started + self.settings.manager_tick_seconds)
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    async def _pause(self, stop: asyncio.Event, wake: asyncio.Event, due: float) -> None:
        """Until the next tick: `due` (monotonic), or sooner when a submission is announced (`wake`), but not within
        `manager_wake_gap_seconds` of the last tick a submission started. Every submission announces itself: at a
        few hundred a second, ticks back to back would take a core (and a script call per group each) to learn
        what the first of them already told."""
        if not await _first_of(stop, wake, due):
            return
        held = self._woken_at + self.settings.manager_wake_gap_seconds
        if held > time.monotonic():
            await _first_of(stop, None, min(held, due))
        self._woken_at = time.monotonic()

    async def _listen(self, wake: asyncio.Event) -> None:
        outage = Outage(log, "the submission listener")
        while True:
            try:
                async with self.redis.pubsub() as pubsub:
                    await pubsub.subscribe(self.keys.events)
                    outage.recovered()
                    wake.set()  # submissions announced while unsubscribed were missed: look now
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            wake.set()
            except asyncio.CancelledError:
                raise
            except REDIS_UNREACHABLE as e:
                await asyncio.sleep(outage.failed(e))
            except Exception:
                log.warning("event subscription lost; retrying", exc_info=True)
                await asyncio.sleep(1.0)


async def _first_of(stop: asyncio.Event, wake: asyncio.Event | None, until: float) -> bool:
    """Wait for `stop`, `wake` or the monotonic time `until`, whichever comes first; True: `wake` is set (and
    `stop` is not)."""
    waiters = [asyncio.ensure_future(event.wait()) for event in (stop, wake) if event is not None]
    try:
        await asyncio.wait(waiters, timeout=max(0.0, until - time.monotonic()), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    return wake is not None and wake.is_set() and not stop.is_set()
