"""Process entry points: `jobqueue manager` and `jobqueue up` (manager + embedded Redis)."""

from __future__ import annotations

import asyncio
import signal

from jobqueue.client import AsyncJobQueueClient, connect_redis
from jobqueue.errors import ConfigError
from jobqueue.groups import ResourceGroup, load_groups
from jobqueue.logs import get_logger
from jobqueue.ops_server import OpsServer
from jobqueue.schedules import load_schedules
from jobqueue.settings import Settings
from manager.backends.base import ScalerBackend
from manager.backends.local import LocalBackend
from manager.reconcile import Reconciler
from manager.scheduler import Scheduler

log = get_logger("jobqueue.manager")


def make_backend(settings: Settings) -> ScalerBackend:
    if settings.scaler_backend == "local":
        return LocalBackend(settings)
    raise ConfigError(
        "JOBQUEUE_SCALER_BACKEND=kubernetes is not available in this version; use 'local'"
    )


async def run_manager(
    settings: Settings,
    stop: asyncio.Event | None = None,
    groups: dict[str, ResourceGroup] | None = None,
    backend: ScalerBackend | None = None,
) -> None:
    """Reconcile until `stop` is set (or SIGTERM/SIGINT), then drain every consumer."""
    groups = groups if groups is not None else load_groups(settings.resource_groups_path)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    redis = connect_redis(settings)
    backend = backend or make_backend(settings)
    await redis.ping()
    log.info(
        "manager started", environment=settings.environment, backend=backend.name,
        groups={n: f"{g.min_instances}..{g.max_instances}" for n, g in groups.items()},
    )
    client = AsyncJobQueueClient(settings, groups=groups, redis=redis)
    schedules, errors = load_schedules(settings.schedules_path, client.registry, groups)
    scheduler = Scheduler(client, schedules, errors) if schedules or errors else None
    reconciler = Reconciler(redis, settings, groups, backend, scheduler=scheduler)
    ops = None
    if settings.manager_http_port >= 0:
        ops = OpsServer(settings.manager_http_port, reconciler.metrics.registry, reconciler.healthy, reconciler.ready)
        await ops.start()
    try:
        await reconciler.run(stop)
    finally:
        if ops is not None:
            await ops.stop()
        log.info("manager stopping; draining consumers")
        await backend.aclose()
        await redis.aclose()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
