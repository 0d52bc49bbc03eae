"""Leader election over a `coordination.k8s.io` Lease, so that of several manager replicas one acts.

Uses kubernetes-asyncio's `LeaderElection` with `LeaseLock`. A standby keeps serving its probes and
metrics (`jobqueue_manager_is_leader 0`) and takes over once the leader has not renewed for the
lease duration. A leader that stops gracefully gives the Lease up at once, so a rolling update
hands over without waiting out the lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket

from kubernetes_asyncio.client import ApiClient, CoordinationV1Api
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.leaderelection.electionconfig import Config
from kubernetes_asyncio.leaderelection.leaderelection import LeaderElection
from kubernetes_asyncio.leaderelection.resourcelock.leaselock import LeaseLock

from jobqueue.logs import get_logger
from jobqueue.settings import Settings

log = get_logger("jobqueue.manager.leader")
# the library logs a traceback each time a standby fails to take a held lease: that is normal here
logging.getLogger("kubernetes_asyncio.leaderelection").setLevel(logging.CRITICAL)


def lease_name(settings: Settings) -> str:
    return f"{settings.kubernetes_release}-manager"


class LeaseElector:
    def __init__(self, api: ApiClient, settings: Settings, identity: str | None = None) -> None:
        self.api = api
        self.namespace = settings.kubernetes_namespace
        self.name = lease_name(settings)
        self.identity = identity or settings.pod_name or f"{socket.gethostname()}-{os.getpid()}"
        lease = settings.kubernetes_lease_seconds
        self.config = Config(
            LeaseLock(self.name, self.namespace, self.identity, api),
            lease_duration=lease, renew_deadline=lease * 2 / 3, retry_period=max(1.0, lease / 5),
            onstarted_leading=self._started, onstopped_leading=self._stopped,
        )
        self.leading = False
        self._task: asyncio.Task[None] | None = None

    def is_leader(self) -> bool:
        return self.leading

    async def _started(self) -> None:
        self.leading = True
        log.info("became leader", lease=self.name, identity=self.identity)

    async def _stopped(self) -> None:
        self.leading = False
        log.warning("lost leadership", lease=self.name, identity=self.identity)

    async def _run(self) -> None:
        while True:
            try:
                await LeaderElection(self.config).run()  # returns when leadership is lost
            except asyncio.CancelledError:
                raise
            except Exception:
                self.leading = False
                log.exception("leader election failed; retrying", lease=self.name)
            await asyncio.sleep(self.config.retry_period)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="leader-election")

    async def stop(self, release: bool = True) -> None:
        """Stop campaigning; `release` gives the Lease up when this manager holds it."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        was_leading, self.leading = self.leading, False
        if release and was_leading:
            await self._release()

    async def _release(self) -> None:
        api = CoordinationV1Api(self.api)
        try:
            lease = await api.read_namespaced_lease(self.name, self.namespace)
            if lease.spec and lease.spec.holder_identity == self.identity:
                lease.spec.holder_identity = ""
                await api.replace_namespaced_lease(self.name, self.namespace, lease)
                log.info("released leadership", lease=self.name, identity=self.identity)
        except ApiException as e:  # someone else took it meanwhile: nothing to give up
            log.warning("could not release the lease", lease=self.name, status=e.status)
