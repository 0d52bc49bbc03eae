"""The manager process's entry, `run_manager`: what `jobqueue manager`, `jobqueue up` and `jobqueue demo` start."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket

from arq.connections import ArqRedis
from redis.asyncio import Redis

from jobqueue.groups import GroupsConfig, ResourceGroup, load_groups_config
from jobqueue.keys import Keys
from jobqueue.logs import get_logger
from jobqueue.ops_server import OpsServer
from jobqueue.redis import connect_redis
from jobqueue.registry import Registry, load_registry
from jobqueue.registry_store import RegistryStore
from jobqueue.schedules import load_schedules
from jobqueue.settings import Settings
from manager.backends.base import ScalerBackend
from manager.backends.kubernetes import KubernetesBackend, api_client_from_settings
from manager.backends.local import LocalBackend
from manager.gc import GarbageCollector
from manager.leader import LeaseElector
from manager.quota_recount import QuotaRecount
from manager.reconcile import Reconciler
from manager.scheduler import Scheduler

log = get_logger("jobqueue.manager")


async def make_backend(settings: Settings) -> tuple[ScalerBackend, LeaseElector | None]:
    """The backend, and on Kubernetes the leader elector sharing its API client."""
    if settings.scaler_backend == "local":
        return LocalBackend(settings), None
    api = await api_client_from_settings(settings)
    return KubernetesBackend(settings, api), LeaseElector(api, settings)


async def apply_registry_file(redis: Redis, settings: Settings, registry: Registry) -> None:
    """Make the registry of JOBQUEUE_REGISTRY_PATH the current version, unless it is already (same content)."""
    store = RegistryStore(redis, Keys.for_environment(settings.environment))
    applied = await store.apply(registry, applied_by=f"manager on {socket.gethostname()} (JOBQUEUE_REGISTRY_PATH)")
    log.info("registry applied at start" if applied.created else "registry file is the current version",
             version=applied.version.id, file=str(settings.registry_path))


async def start_registry_and_schedules(redis: ArqRedis, settings: Settings, config: GroupsConfig) -> Scheduler | None:
    """Apply JOBQUEUE_REGISTRY_PATH (the version new jobs are planned against) and load the schedules, if any."""
    registry = load_registry(settings.registry_path)
    if settings.registry_path is not None:
        await apply_registry_file(redis, settings, registry)
    schedules, errors = load_schedules(settings.schedules_path, registry, config.groups)
    if not (schedules or errors):
        return None
    from jobqueue.client import AsyncJobQueueClient  # the scheduler submits through the SDK (pyarrow)

    client = AsyncJobQueueClient(settings, registry=registry, groups=config.groups, redis=redis)
    return Scheduler(client, schedules, errors)


async def run_manager(
    settings: Settings,
    stop: asyncio.Event | None = None,
    groups: dict[str, ResourceGroup] | None = None,
    backend: ScalerBackend | None = None,
    elector: LeaseElector | None = None,
) -> None:
    """Reconcile until `stop` is set (or SIGTERM/SIGINT), then drain every consumer."""
    config = GroupsConfig(groups) if groups is not None else load_groups_config(settings.resource_groups_path)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    redis = connect_redis(settings)
    if backend is None:
        backend, elector = await make_backend(settings)
    await redis.ping()
    log.info(
        "manager started", environment=settings.environment, backend=backend.name,
        groups={n: f"{g.min_instances}..{g.max_instances}" for n, g in config.groups.items()},
        group_errors=config.errors, leader_election=elector is not None,
    )
    for error in config.errors.values():
        log.error("resource group not loaded; fix the file, it is re-read while running", error=error)
    scheduler = await start_registry_and_schedules(redis, settings, config)
    reconciler = Reconciler(
        redis, settings, config, backend, scheduler=scheduler,
        groups_path=settings.resource_groups_path if groups is None else None,
        leader=elector.is_leader if elector is not None else None,
    )
    ops = None
    if settings.manager_http_port >= 0:  # first: a taken port fails the start before any consumer runs
        ops = OpsServer.from_settings(settings, settings.manager_http_port, reconciler.metrics.registry,
                                     reconciler.healthy, reconciler.ready, variable="JOBQUEUE_MANAGER_HTTP_PORT")
        await ops.start()
    try:
        await backend.start()  # before campaigning: a standby is ready (and warm) too
    except BaseException:
        if ops is not None:
            await ops.stop()
        raise
    if elector is not None:
        elector.start()
    gc = asyncio.create_task(GarbageCollector(redis, settings, metrics=reconciler.metrics).run(stop, reconciler.leader),
                             name="gc")
    recount = asyncio.create_task(QuotaRecount(redis, settings).run(stop, reconciler.leader), name="quota-recount")
    try:
        await reconciler.run(stop)
    finally:
        for task in (gc, recount):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if elector is not None:
            await elector.stop()
        if ops is not None:
            await ops.stop()
        log.info("manager stopping; draining consumers")
        await backend.aclose()
        await redis.aclose()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
