"""The manager's reconciler over the Kubernetes emulator, ticked by hand: what the scaling tests share."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import kmock

from jobqueue import AsyncJobQueueClient
from jobqueue.groups import load_groups_config
from jobqueue.settings import Settings
from manager.backends.kubernetes import KubernetesBackend
from manager.reconcile import Reconciler
from tests.integration.test_kubernetes_backend import DEPLOYMENTS, NS, api_client
from tests.kube_emulator import ClusterEmulator


@contextlib.asynccontextmanager
async def emulated_reconciler(settings: Settings, **client: Any) -> AsyncIterator[
        tuple[ClusterEmulator, Reconciler, AsyncJobQueueClient]]:
    """The emulator served by kmock, a `Reconciler` on the Kubernetes backend against it, and a client (keyword
    arguments: `AsyncJobQueueClient`'s)."""
    async with ClusterEmulator() as emulator, kmock.Server(emulator) as server, \
            AsyncJobQueueClient(settings, **client) as jobs:
        backend = KubernetesBackend(settings, api_client(str(server.url).rstrip("/")))
        reconciler = Reconciler(jobs.redis, settings, load_groups_config(settings.resource_groups_path), backend,
                                groups_path=settings.resource_groups_path)
        try:
            yield emulator, reconciler, jobs
        finally:
            await backend.aclose()


def replicas(emulator: ClusterEmulator) -> int:
    """The replicas of the one consumer Deployment in the test namespace."""
    (dep,) = emulator.items(DEPLOYMENTS, NS)
    return int(dep["spec"]["replicas"])
