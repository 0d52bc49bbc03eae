"""Kubernetes backend: one consumer Deployment per resource group, created on demand and scaled.

- Deployments `<release>-consumer-<group>` are server-side applied (field manager `jobqueue-manager`)
  when missing or when the group's config hash changed; otherwise only the `scale` subresource is
  written, and only when the replica count differs.
- Before lowering replicas, each pod gets `controller.kubernetes.io/pod-deletion-cost`: busy pods
  (their name holds a job heartbeat: consumers use the pod name as consumer id) high, idle pods 0,
  so the ReplicaSet removes idle pods. The decision never goes below the busy count, and a
  consumer that still receives SIGTERM drains its running jobs first.
- A group gone from the config is scaled to its busy count, then to 0, and its Deployment is
  deleted once it has no pods.
- Only objects labelled `app.kubernetes.io/managed-by=jobqueue-manager` and this release are read
  or written. Replicas come from an informer cache, not one API call per group per tick.
- OOM kills: when the reaper takes the jobs of lost consumers, their pods are read; a consumer container
  whose (last) state is `terminated` with reason `OOMKilled` names the kill in the jobs' errors.
- API failures: 409 is retried after a fresh read, 429/5xx/timeouts back off with jitter; what
  still fails is raised to the reconciler, which reports it for that group and retries next tick.
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import aiohttp
import yaml
from kubernetes_asyncio.client import ApiClient, AppsV1Api, Configuration, CoreV1Api
from kubernetes_asyncio.client.exceptions import ApiException

from jobqueue.groups import ResourceGroup
from jobqueue.jobstore import OOM_KILL_TTL_SECONDS
from jobqueue.logs import get_logger
from jobqueue.preflight import PreflightError
from jobqueue.settings import Settings
from jobqueue.sizes import byte_count, format_bytes
from jobqueue.tls_close import close_dropped_tls
from manager.backends.base import OomKill
from manager.backends.kube_cache import DeploymentCache
from manager.backends.kube_objects import (
    CONFIG_HASH,
    DELETION_COST,
    FIELD_MANAGER,
    GROUP_LABEL,
    consumer_deployment,
    deployment_name,
    managed_selector,
    selector_labels,
)
from manager.observe import GroupObservation

log = get_logger("jobqueue.manager.kubernetes")
T = TypeVar("T")
RETRYABLE_STATUS = {429, 500, 502, 503, 504}
APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"


async def api_client_from_settings(settings: Settings) -> ApiClient:
    """In-cluster service account, or `JOBQUEUE_KUBECONFIG`. Neither usable: a `PreflightError` naming the variable."""
    from kubernetes_asyncio import config

    cfg = Configuration()
    try:
        if settings.kubeconfig is not None:
            await config.load_kube_config(config_file=str(settings.kubeconfig), client_configuration=cfg)
        else:
            config.load_incluster_config(client_configuration=cfg)
    except (config.ConfigException, yaml.YAMLError, OSError, ValueError, TypeError, AttributeError) as e:
        where = f"{settings.kubeconfig} is not a usable kubeconfig" if settings.kubeconfig is not None else \
            "not in a pod with a service account, and no kubeconfig is set"
        raise PreflightError(f"JOBQUEUE_KUBECONFIG: {where} ({type(e).__name__}: {e}); run the manager in the "
                             "cluster (the chart does), set JOBQUEUE_KUBECONFIG, or JOBQUEUE_SCALER_BACKEND=local"
                             ) from None
    return kube_api_client(cfg)


def kube_api_client(cfg: Configuration) -> ApiClient:
    """kubernetes_asyncio's client for `cfg`, whose TLS sockets are all closed once it is closed, even those of
    connections dropped mid-response, such as the Deployment watch when the backend stops (`close_dropped_tls`)."""
    api = ApiClient(cfg)
    close_dropped_tls(api.rest_client.pool_manager.connector)
    return api


async def with_retries(call: Callable[[], Awaitable[T]], what: str, attempts: int = 4, base: float = 0.05) -> T:
    """Retry 409 (the caller's `call` re-reads), 429, 5xx and timeouts with jittered backoff."""
    for attempt in range(1, attempts + 1):
        try:
            return await call()
        except ApiException as e:
            if attempt == attempts or (e.status != 409 and e.status not in RETRYABLE_STATUS):
                raise
            error = f"{e.status} {e.reason}"
        except (TimeoutError, aiohttp.ClientError) as e:
            if attempt == attempts:
                raise
            error = f"{type(e).__name__}: {e}"
        delay = base * 2 ** (attempt - 1) * random.uniform(0.5, 1.5)
        log.warning("kubernetes call failed; retrying", call=what, error=error, attempt=attempt,
                    retry_in_seconds=round(delay, 3))
        await asyncio.sleep(delay)
    raise AssertionError("unreachable")


async def _json(response: Any) -> dict[str, Any]:
    """The body of a raw (`_preload_content=False`) reply; an error status raises `ApiException` as usual."""
    async with response:
        body = await response.read()
        if response.status >= 400:
            error = ApiException(status=response.status, reason=response.reason)
            error.body = body.decode(errors="replace")
            raise error
        reply: dict[str, Any] = json.loads(body)
        return reply


def spec_replicas(deployment: dict[str, Any] | None) -> int:
    """The replicas a Deployment asks for; 0 when there is none."""
    return 0 if deployment is None else int(deployment.get("spec", {}).get("replicas") or 0)


def _readable(quantity: str | None) -> str:
    """A memory quantity as the local backend prints one (`1Gi` -> `1.0 GiB`)."""
    if quantity is None:
        return "the container's memory limit"
    try:
        return format_bytes(byte_count(quantity))
    except (ValueError, TypeError):
        return quantity


def pod_oom_kill(pod: dict[str, Any], now: float) -> OomKill | None:
    """The consumer container's OOM kill from a pod's status (`state` or `lastState` terminated with reason
    `OOMKilled`, finished within the last hour), with the container's memory limit; None otherwise."""
    limits = {c.get("name"): (c.get("resources") or {}).get("limits", {}).get("memory")
              for c in pod.get("spec", {}).get("containers", [])}
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        for state in (status.get("state"), status.get("lastState")):
            terminated = (state or {}).get("terminated") or {}
            if terminated.get("reason") != "OOMKilled":
                continue
            finished = terminated.get("finishedAt")
            at = datetime.fromisoformat(finished.replace("Z", "+00:00")).timestamp() if finished else now
            if now - at > OOM_KILL_TTL_SECONDS:
                continue
            metadata = pod.get("metadata", {})
            return OomKill(metadata.get("name", ""), metadata.get("labels", {}).get(GROUP_LABEL, ""),
                           _readable(limits.get(status.get("name"))), at,
                           terminated.get("containerID") or f"{status.get('restartCount', 0)}:{finished}")
    return None


class KubernetesBackend:
    name = "kubernetes"

    def __init__(self, settings: Settings, api: ApiClient, sync_timeout: float = 30.0) -> None:
        self.settings = settings
        self.api = api
        self.namespace = settings.kubernetes_namespace
        self.apps = AppsV1Api(api)
        self.core = CoreV1Api(api)
        self.cache = DeploymentCache(api, self.namespace, managed_selector(settings),
                                     timeout=settings.kubernetes_request_timeout_seconds)
        self.sync_timeout = sync_timeout
        self.timeout = settings.kubernetes_request_timeout_seconds  # a hung API server cannot stall a tick
        self._started = False
        self._rendered: dict[str, tuple[ResourceGroup, dict[str, Any]]] = {}
        self._names: dict[str, str] = {}
        self._managed: tuple[int, set[str]] = (-1, set())

    async def start(self) -> None:
        if not self._started:
            self._started = True
            await self.cache.start()
            await self.cache.wait_synced(self.sync_timeout)

    def synced(self) -> bool:
        return self.cache.synced.is_set()

    def _deployment(self, group: str) -> dict[str, Any] | None:
        name = self._names.get(group)
        if name is None:
            name = self._names[group] = deployment_name(self.settings, group)
        return self.cache.objects.get(name)

    async def current_replicas(self, group: str) -> int:
        if not self._started:
            await self.start()
        return spec_replicas(self._deployment(group))

    def managed_groups(self) -> set[str]:
        if self._managed[0] != self.cache.version:
            groups = {g for o in self.cache.objects.values() if (g := o["metadata"].get("labels", {}).get(GROUP_LABEL))}
            self._managed = (self.cache.version, groups)
        return set(self._managed[1])

    async def converge(self, group: ResourceGroup, replicas: int, observed: GroupObservation) -> None:
        """Make the group's Deployment match its config and `replicas`; no API call when it already does."""
        if not self._started:
            await self.start()
        dep = self._deployment(group.name)
        if dep is None and replicas == 0:
            return  # created on demand: a group that never had work has no Deployment
        body = self._render(group, replicas)
        current = spec_replicas(dep)
        if dep is not None and replicas < current:
            await self._set_deletion_costs(group.name, observed)
        if dep is None or dep["metadata"].get("annotations", {}).get(CONFIG_HASH) != body["metadata"]["annotations"][
            CONFIG_HASH
        ]:
            log.info("applying consumer deployment", group=group.name, replicas=replicas,
                     reason="missing" if dep is None else "config changed")
            await self._apply(body)
        elif replicas != current:
            await self._scale(group.name, replicas)

    def _render(self, group: ResourceGroup, replicas: int) -> dict[str, Any]:
        """Rendering hashes the whole pod template: done once per config object, not on every tick."""
        cached = self._rendered.get(group.name)
        if cached is None or cached[0] is not group:
            cached = self._rendered[group.name] = (group, consumer_deployment(group, self.settings, 0))
        body = cached[1]
        return {**body, "spec": {**body["spec"], "replicas": replicas}}

    async def retire(self, group: str, replicas: int, observed: GroupObservation) -> None:
        """`group` left the config: scale it to `replicas` (its busy count), delete it once it has no pods."""
        await self.start()
        dep = self._deployment(group)
        if dep is None:
            return
        current = spec_replicas(dep)
        if replicas < current:
            await self._set_deletion_costs(group, observed)
            await self._scale(group, replicas)
        elif current == 0 and not await self._pods(group):
            name = deployment_name(self.settings, group)
            log.info("deleting consumer deployment of a removed group", group=group, deployment=name)
            try:
                await with_retries(lambda: self.apps.delete_namespaced_deployment(
                    name, self.namespace, _request_timeout=self.timeout), "delete")
            except ApiException as e:
                if e.status != 404:
                    raise
            self.cache.forget(name)

    async def _apply(self, body: dict[str, Any]) -> None:
        name = body["metadata"]["name"]

        async def apply() -> dict[str, Any]:
            return await _json(await self.apps.patch_namespaced_deployment(  # type: ignore[call-arg]  # (stubs)
                name, self.namespace, body, field_manager=FIELD_MANAGER, force=True,
                _content_type=APPLY, _preload_content=False, _request_timeout=self.timeout,
            ))

        self.cache.observe(await with_retries(apply, f"apply {name}"))

    async def _scale(self, group: str, replicas: int) -> None:
        name = deployment_name(self.settings, group)

        async def scale() -> dict[str, Any]:
            return await _json(await self.apps.patch_namespaced_deployment_scale(  # type: ignore[call-arg]  # (stubs)
                name, self.namespace, {"spec": {"replicas": replicas}}, field_manager=FIELD_MANAGER,
                _content_type=MERGE, _preload_content=False, _request_timeout=self.timeout,
            ))

        scaled = await with_retries(scale, f"scale {name}")
        dep = self.cache.get(name)
        if dep is not None:  # the Scale reply carries the Deployment's new resourceVersion
            spec = {**dep.get("spec", {}), "replicas": scaled.get("spec", {}).get("replicas", replicas)}
            metadata = {**dep["metadata"], "resourceVersion": scaled.get("metadata", {}).get("resourceVersion")}
            self.cache.observe({**dep, "metadata": metadata, "spec": spec})

    async def _pods(self, group: str) -> list[dict[str, Any]]:
        selector = ",".join(f"{k}={v}" for k, v in selector_labels(self.settings, group).items())

        async def pods() -> dict[str, Any]:
            return await _json(await self.core.list_namespaced_pod(
                self.namespace, label_selector=selector, _preload_content=False, _request_timeout=self.timeout))

        return [p for p in (await with_retries(pods, f"list pods of {group}"))["items"]
                if not p["metadata"].get("deletionTimestamp")]

    def pending_oom_kills(self) -> list[OomKill]:
        """Kills are looked up when jobs are reaped (`oom_killed`): no pod watch."""
        return []

    async def oom_killed(self, consumer_ids: set[str]) -> list[OomKill]:
        """Read the pods named by these consumer ids (a consumer's id is its pod's name); a missing one is gone.
        Listed by name, not read: the chart's Role grants `list` on pods, not `get`."""
        kills = []
        for name in sorted(consumer_ids):
            async def read(n: str = name) -> dict[str, Any]:
                return await _json(await self.core.list_namespaced_pod(
                    self.namespace, field_selector=f"metadata.name={n}", _preload_content=False,
                    _request_timeout=self.timeout))
            found = [p for p in (await with_retries(read, f"read pod {name}"))["items"]
                     if p["metadata"]["name"] == name]
            if not found:
                continue
            kill = pod_oom_kill(found[0], time.time())
            if kill is not None:
                kills.append(kill)
        return kills

    async def _set_deletion_costs(self, group: str, observed: GroupObservation) -> None:
        """Busy pods high, idle pods 0, written only where the annotation differs."""
        for pod in await self._pods(group):
            name = pod["metadata"]["name"]
            cost = str(self.settings.kubernetes_busy_deletion_cost if name in observed.busy_ids else 0)
            if (pod["metadata"].get("annotations") or {}).get(DELETION_COST) == cost:
                continue
            patch = {"metadata": {"annotations": {DELETION_COST: cost}}}
            await with_retries(functools.partial(self._patch_pod, name, patch), f"annotate pod {name}")

    async def _patch_pod(self, name: str, patch: dict[str, Any]) -> None:
        await self.core.patch_namespaced_pod(  # type: ignore[call-arg]  # the stubs omit `_content_type`
            name, self.namespace, patch, _content_type=MERGE, _request_timeout=self.timeout)

    async def aclose(self) -> None:
        """The manager is stopping: consumers keep running (they are the cluster's, not this process's)."""
        await self.cache.aclose()
        await self.api.close()
