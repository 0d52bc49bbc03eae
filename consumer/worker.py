"""The consumer process: an arq worker on one resource group's queue.

Thin glue: arq hands us a job; we validate the payload, claim the job record (queued -> running),
run the query in a thread (`jobqueue.engine.execute`), and record the outcome. A malformed payload is
logged once and rejected; the worker keeps serving. Presence and busy jobs are published as a
heartbeat so the manager never stops a busy consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, NoReturn, cast

import structlog
from arq import Worker
from arq.worker import Retry, func
from pydantic import ValidationError

from consumer.arq_worker import JobQueueWorker
from consumer.job import JobRun, PrepareQuery, RunnableQuery, shard_ended, to_the_end
from consumer.metrics import ConsumerMetrics
from jobqueue import entries, serializer
from jobqueue.attribution import log_context
from jobqueue.clock import Clock, system_clock
from jobqueue.engine import warm
from jobqueue.engine.disk_space import reserve_slots, sweep_spill
from jobqueue.engine.execute import PreparedQuery, engine_limits
from jobqueue.engine.resources import container_memory_bytes
from jobqueue.engine.scan_cache import open_scan_cache
from jobqueue.engine.warm import InstanceSettings
from jobqueue.errors import RegistryVersionNotFound
from jobqueue.fair_share import limits_json
from jobqueue.jobstore import JobStore
from jobqueue.keys import ARQ_FUNCTION, Keys, submitted_event
from jobqueue.logs import capped, configure_logging, get_logger
from jobqueue.models import ConsumerInfo, QueryJob
from jobqueue.ops_server import OpsServer
from jobqueue.outage import REDIS_UNREACHABLE, Outage
from jobqueue.preflight import check_config_files, check_redis, check_spill_dir, fail_cleanly, settings_or_exit
from jobqueue.profiler.targets import announce_role
from jobqueue.redis import connect_redis
from jobqueue.registry import Registry, load_registry
from jobqueue.registry_store import RegistryStore
from jobqueue.settings import Settings
from jobqueue.storage import Storage, job_uri

log = get_logger("jobqueue.consumer")

# Once the worker has stopped (every outcome recorded), only the process's teardown is left: closing the event
# loop, its executor's threads, the interpreter's exit. Past this, every thread's stack goes to stderr (the
# container's log) and the process exits 1, rather than hang until the kubelet's SIGKILL (137, no stacks).
TEARDOWN_SECONDS = 10.0


class Consumer:
    """State of one consumer process: identity, Redis handles, and the jobs it is running."""

    def __init__(
        self, settings: Settings, group: str, registry: Registry, prepare: PrepareQuery | None = None,
        max_jobs: int = 1, clock: Clock = system_clock,
    ) -> None:
        self.settings = settings
        self.clock = clock  # the time its jobs' deadlines and records go by
        self.group = group
        self.registry = registry  # the local file's (JOBQUEUE_REGISTRY_PATH): for jobs that pin no version
        self.keys = Keys.for_environment(settings.environment)
        self.redis = connect_redis(settings)
        self.registries = RegistryStore(self.redis, self.keys)
        self.store = JobStore(self.redis, self.keys, settings.job_ttl_seconds, clock)
        self.storage = Storage(settings)
        self.consumer_id = settings.consumer_id or f"{socket.gethostname()}-{os.getpid()}"
        self.started_at = self.last_heartbeat = time.time()
        self.running: set[str] = set()  # the jobs it has claimed and not yet released
        self.job_tasks: dict[str, asyncio.Task[Any]] = {}  # job id -> the task running it (`job_finishing`)
        self.ended_shards: dict[str, tuple[QueryJob, str]] = {}  # shard id -> (job, outcome): released at job end
        self.draining = False
        self._tasks: list[asyncio.Task[None]] = []
        self._prepare: PrepareQuery = prepare or PreparedQuery
        sweep_spill(settings.spill_root)  # spill directories of killed consumers
        self.disk_slots = reserve_slots(settings, max_jobs)  # its query slots, for sharing the spill volume
        self.scan_cache = open_scan_cache(settings)
        memory = settings.container_memory_bytes
        self.metrics = ConsumerMetrics(group, max_jobs, memory if memory is not None else container_memory_bytes()[0],
                                       settings.spill_root, self.scan_cache)
        warm.enable()  # each query's DuckDB instance is started ahead, while the consumer waits (`engine.warm`)
        limits = engine_limits(settings)
        self.instance_settings = InstanceSettings(limits.memory_limit_bytes, limits.threads, limits.spill_root)
        self.team_limits = limits_json(settings)  # the teams' running limits, checked at take and claim

    async def registry_for(self, job: QueryJob) -> Registry:
        """The registry a job runs with: the version it pins, from Redis (cached: versions never change), or the
        local file's for a job that pins none (queued by an older SDK, or with no version in Redis). A pinned
        version that Redis no longer has raises `RegistryVersionNotFound`: the job fails, never runs on another."""
        if job.registry_version is None:
            return self.registry
        try:
            return await self.registries.registry(job.registry_version)
        except RegistryVersionNotFound as e:
            raise RegistryVersionNotFound(
                f"the job pins registry version {job.registry_version}, which is not available: {e}. It is not run "
                "on another version; resubmit it to plan it against the current one") from None

    def prepare(self, job: QueryJob, registry: Registry) -> RunnableQuery:
        """Plan a job for execution (the seam the consumer-overhead benchmark replaces with a no-op)."""
        return self._prepare(job, registry, self.settings, self.consumer_id, scan_cache=self.scan_cache)

    # --- arq hooks ---------------------------------------------------------------------------
    async def startup(self, ctx: dict[str, Any]) -> None:
        structlog.contextvars.bind_contextvars(consumer_id=self.consumer_id, resource_group=self.group)
        await self.publish_presence()
        warm.SPARES.prepare(self.instance_settings)
        self._tasks.append(asyncio.create_task(self._heartbeat_loop(), name="heartbeat"))
        log.info("consumer started", queue=self.keys.queue(self.group))

    async def shutdown(self, ctx: dict[str, Any]) -> None:
        for task in self._tasks:
            task.cancel()
        await cast(Awaitable[int], self.redis.hdel(self.keys.consumers(self.group), self.consumer_id))
        if self.scan_cache is not None:
            self.scan_cache.close()
        self.disk_slots.release()
        await asyncio.to_thread(warm.SPARES.discard)
        log.info("consumer stopped")

    def job_id(self, ctx: dict[str, Any]) -> str:
        """The job id of the job arq runs (arq knows it by its arq id; only ours reach a job: see arq_worker)."""
        return self.keys.job_id_of(ctx["job_id"]) or ctx["job_id"]

    async def job_started(self, ctx: dict[str, Any]) -> None:
        # runs inside arq's per-job task, so every line logged for this job (arq's too) carries its id
        job_id = self.job_id(ctx)
        structlog.contextvars.bind_contextvars(job_id=job_id)

    async def job_finishing(self, ctx: dict[str, Any]) -> None:
        """Before arq frees the job for another take (its in-progress key): a run cut off by the drain has handed
        its record back. arq's second cancel at shutdown (its `close()`) can end arq's wait for the run while the
        run is still handing back; another consumer could then take the job while its record said running, skip
        it, and arq would drop its queue entry, leaving the record, queued a moment later, on no queue."""
        task = self.job_tasks.pop(self.job_id(ctx), None)
        if task is not None and task is not asyncio.current_task() and not task.done():
            log.info("waiting for the cut-off run to hand its job back")
            await to_the_end(asyncio.wait({task}))

    async def job_ended(self, ctx: dict[str, Any]) -> None:
        """Fallback release of a job this consumer claimed (`running`): its final transition normally released it
        in the same round trip. A take that claimed nothing releases nothing: the running entry and heartbeat may be
        another consumer's."""
        job_id = self.job_id(ctx)
        if job_id in self.running:
            self.running.discard(job_id)
            await self.store.release(job_id, self.group)
        if self.team_limits:  # a team's job ended: the consumers skipping its jobs at their limit look again now
            with contextlib.suppress(*REDIS_UNREACHABLE):
                await self.redis.publish(self.keys.events, submitted_event(self.group))
        ended = self.ended_shards.pop(job_id, None)
        if ended is not None:  # arq has taken it off its queue now: its end may release a held sibling
            await shard_ended(self.store, *ended)
        warm.SPARES.prepare(self.instance_settings)  # for the next query, started while none runs

    # --- presence ------------------------------------------------------------------------------
    async def publish_presence(self) -> None:
        info = ConsumerInfo(
            consumer_id=self.consumer_id, resource_group=self.group, host=socket.gethostname(),
            pid=os.getpid(), started_at=self.started_at, seen_at=time.time(),
            running=sorted(self.running), draining=self.draining,
        )
        await cast(Awaitable[int], self.redis.hset(self.keys.consumers(self.group), self.consumer_id,
                                                   info.model_dump_json()))
        self.last_heartbeat = info.seen_at

    def healthy(self) -> bool:
        """Liveness: the heartbeat loop published recently (the event loop is not stuck)."""
        return time.time() - self.last_heartbeat < max(10.0, 5 * self.settings.consumer_heartbeat_seconds)

    async def ready(self) -> bool:
        return bool(await self.redis.ping()) and not self.draining

    async def _heartbeat_loop(self) -> None:
        outage = Outage(log, "the presence heartbeat")
        while True:
            await asyncio.sleep(self.settings.consumer_heartbeat_seconds)
            try:
                await self.publish_presence()
                outage.recovered()
            except REDIS_UNREACHABLE as e:  # Redis blips must not kill the consumer
                outage.failed(e)
            except Exception:
                log.warning("heartbeat failed", exc_info=True)

    async def reject(self, arq_id: str, reason: str) -> None:
        """Reject a queue entry that must not run (see `jobqueue.entries`)."""
        await entries.reject(self.keys, self.store, self.storage, self.group, arq_id, reason)

    # --- the job -------------------------------------------------------------------------------
    async def run(self, job_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        with structlog.contextvars.bound_contextvars(job_id=job_id), self.metrics.running_job(job_id):
            try:
                job = await self._validate(job_id, payload)
                if job is None:
                    return {"rejected": True}
                with structlog.contextvars.bound_contextvars(**log_context(job)):  # owner, team, query_name...
                    return await JobRun(self, job)()
            except REDIS_UNREACHABLE as e:
                # never an arq failure (that would drop the job from its queue): run it again later
                log.warning("redis unreachable before the job was recorded; it will be taken again", error=str(e))
                raise Retry(defer=timedelta(seconds=1)) from e

    async def _validate(self, job_id: str, payload: dict[str, Any]) -> QueryJob | None:
        try:
            job = QueryJob.model_validate(payload.get("job"))
            # the input must be the one staged for this job: a payload cannot make a consumer read elsewhere
            staged = job_uri(self.settings.staging, self.settings.environment, job_id, "input.parquet")
            problems = [
                f"{name} is {got!r}, expected {want!r}"
                for name, got, want in (
                    ("job_id", job.job_id, job_id),
                    ("resource_group", job.resource_group, self.group),
                    ("environment", job.environment, self.settings.environment),
                    ("input_uri", job.input_uri, staged),
                )
                if got != want
            ]
            if problems:
                raise ValueError("; ".join(problems))
            return job
        except (ValidationError, ValueError) as e:
            reason = capped(f"malformed job payload: {e}".replace("\n", " "))
            log.error("job payload rejected", reason=reason)
            if await self.store.mark_failed(job_id, reason):  # its staged input will never be read
                await self.storage.discard_job_files(job_id, result=True)
            return None


async def run_offline_query(ctx: dict[str, Any], **payload: Any) -> dict[str, Any]:
    consumer: Consumer = ctx["consumer"]
    return await consumer.run(consumer.job_id(ctx), payload)


def build_worker(
    settings: Settings, group: str, max_jobs: int, registry: Registry | None = None, **worker_options: Any
) -> Worker:
    """An arq Worker for `group`, wired to a `Consumer`. Call inside a running event loop.
    `prepare` (in `worker_options`) replaces query planning, `clock` the time; other options go to arq's Worker."""
    prepare = worker_options.pop("prepare", None)
    clock = worker_options.pop("clock", system_clock)
    registry = registry if registry is not None else load_registry(settings.registry_path)
    consumer = Consumer(settings, group, registry, prepare, max_jobs, clock)
    options: dict[str, Any] = dict(
        # attempts are counted and limited by JobRun (max_retries per query), not by arq
        functions=[func(run_offline_query, name=ARQ_FUNCTION, max_tries=entries.MAX_TRIES)],
        queue_name=consumer.keys.queue(group),
        redis_pool=consumer.redis,
        max_jobs=max_jobs,
        job_timeout=settings.job_timeout_seconds,
        keep_result=60,
        poll_delay=settings.consumer_poll_seconds,
        wake_on=(consumer.keys.events, submitted_event(group)),  # a submission to its group wakes it at once
        job_completion_wait=settings.consumer_drain_seconds,
        health_check_interval=max(1, int(settings.consumer_heartbeat_seconds)),
        on_startup=consumer.startup,
        on_shutdown=consumer.shutdown,
        on_job_start=consumer.job_started,
        on_job_end=consumer.job_finishing,
        after_job_end=consumer.job_ended,
        ctx={"consumer": consumer},
        job_serializer=serializer.dumps,
        job_deserializer=serializer.loads,
        log_results=False,
        handle_signals=False,  # serve() installs drain handlers; tests run workers in-process
    )
    return JobQueueWorker(**{**options, **worker_options})


async def serve(settings: Settings, group: str, max_jobs: int) -> None:
    """Run a consumer until SIGTERM/SIGINT (drain) or, if configured, until the parent dies. The process's own:
    it installs signal handlers, and once closed arms the teardown watchdog (`TEARDOWN_SECONDS`, exit 1)."""
    worker = build_worker(settings, group, max_jobs)
    consumer: Consumer = worker.ctx["consumer"]

    def drain() -> None:
        if not consumer.draining:
            consumer.draining = True
            log.info("draining: no new jobs; waiting for running ones", running=sorted(consumer.running))
            worker.handle_sig_wait_for_completion(signal.SIGTERM)
            # a drain that outlasts its wait and the close after it: the stacks show where it is
            faulthandler.dump_traceback_later(settings.consumer_drain_seconds + TEARDOWN_SECONDS)

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, drain)
    watcher = asyncio.create_task(_watch_parent(drain)) if settings.consumer_exit_with_parent else None
    ops = None
    if settings.consumer_http_port >= 0:  # its metrics (consumer.metrics, and the process's) and probes
        ops = OpsServer.from_settings(settings, settings.consumer_http_port, consumer.metrics.registry,
                                      consumer.healthy, consumer.ready, variable="JOBQUEUE_CONSUMER_HTTP_PORT")
        await ops.start()
    try:
        with contextlib.suppress(asyncio.CancelledError):
            await worker.async_run()
    finally:
        if watcher:
            watcher.cancel()
        if ops:
            await ops.stop()
        await worker.close()
        log.info("consumer closed; exiting")
        faulthandler.dump_traceback_later(TEARDOWN_SECONDS, exit=True)


async def _watch_parent(drain: Callable[[], None]) -> None:
    parent = os.getppid()
    while os.getppid() == parent:
        await asyncio.sleep(1.0)
    log.warning("parent process exited; draining")
    drain()


def run_consumer(resource_group: str, max_jobs: int) -> None:
    """The consumer process's entry (`python -m consumer`, `jobqueue consumer`): settings, logging and
    start-up checks, then `serve` until SIGTERM. A bad setting or an unreachable Redis exits naming it."""
    settings = settings_or_exit()
    configure_logging(settings.log_format, settings.log_level)
    announce_role("consumer")
    with fail_cleanly():
        check_spill_dir(settings)
        check_config_files(settings, groups=False, schedules=False)
        asyncio.run(check_redis(settings))
        asyncio.run(serve(settings, resource_group, max_jobs))
    _exit_now()


def _exit_now() -> NoReturn:
    """Exit 0 without the interpreter's teardown: every outcome is in Redis and every log line is written. That
    teardown once kept a drained pod's consumer alive for a minute after its last line, until the kubelet's
    SIGKILL, about 1 drain in 9 in the node tier; with no stack from the watchdog, so past faulthandler's own
    teardown (the last of module finalization, or C++ static destructors such as DuckDB's)."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(0)
