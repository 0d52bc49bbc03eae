"""An informer for the manager's consumer Deployments: list once, then watch, served from memory.

A tick reads replicas from this cache instead of calling the API once per group, so a tick's API
traffic does not grow with the number of groups. Like client-go's informer: LIST gives a
resourceVersion, WATCH continues from it, and a watch that ends or expires (410 Gone) starts again
with a fresh LIST. Our own writes are folded in from their responses at once (`observe`), so the next
tick does not act on a state we already changed. Objects are kept as plain JSON dicts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import Awaitable, Callable
from typing import Any

from kubernetes_asyncio.client import ApiClient, AppsV1Api

from jobqueue.logs import get_logger

log = get_logger("jobqueue.manager.kubernetes")
WATCH_TIMEOUT_SECONDS = 300


def resource_version(obj: dict[str, Any]) -> int:
    """etcd revisions are integers; anything else (an emulator's '...') sorts as unknown."""
    try:
        return int(obj.get("metadata", {}).get("resourceVersion", -1))
    except (TypeError, ValueError):
        return -1


class DeploymentCache:
    def __init__(self, api: ApiClient, namespace: str, selector: str, timeout: float = 10.0) -> None:
        self.apps = AppsV1Api(api)
        self.namespace = namespace
        self.selector = selector
        self.timeout = timeout
        self.objects: dict[str, dict[str, Any]] = {}
        self.synced = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.version = 0  # bumped on every change, for callers that cache what they derive

    def _changed(self) -> None:
        self.version += 1

    def get(self, name: str) -> dict[str, Any] | None:
        return self.objects.get(name)

    def observe(self, obj: dict[str, Any]) -> None:
        """Fold in an object returned by one of our writes, unless the cache already has a newer one."""
        name = obj["metadata"]["name"]
        known = self.objects.get(name)
        if known is None or resource_version(obj) >= resource_version(known):
            self.objects[name] = obj
            self.version += 1

    def forget(self, name: str) -> None:
        self.objects.pop(name, None)
        self.version += 1

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="deployment-informer")

    async def wait_synced(self, timeout: float) -> None:
        await asyncio.wait_for(self.synced.wait(), timeout)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                version = await self._list()
                failures = 0
                await self._watch(version)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                failures += 1
                delay = min(10.0, 0.2 * 2 ** min(failures, 6)) * random.uniform(0.5, 1.0)
                log.warning("deployment watch failed; relisting", error=f"{type(e).__name__}: {e}",
                            retry_in_seconds=round(delay, 2))
                await asyncio.sleep(delay)

    async def _raw(self, call: Callable[..., Awaitable[Any]], **kwargs: Any) -> Any:
        kwargs.setdefault("_request_timeout", self.timeout)  # the watch passes its own
        return await call(self.namespace, label_selector=self.selector, _preload_content=False, **kwargs)

    async def _list(self) -> str | None:
        response = await self._raw(self.apps.list_namespaced_deployment)
        async with response:
            if response.status >= 400:
                raise RuntimeError(f"list deployments: {response.status} {(await response.read())[:200]!r}")
            body = json.loads(await response.read())
        self.objects = {o["metadata"]["name"]: o for o in body.get("items", [])}
        self.synced.set()
        self._changed()
        version = body.get("metadata", {}).get("resourceVersion")
        return version if version and version.isdigit() else None

    async def _watch(self, version: str | None) -> None:
        kwargs: dict[str, Any] = {"watch": True, "timeout_seconds": WATCH_TIMEOUT_SECONDS,
                                  "allow_watch_bookmarks": True}
        if version:
            kwargs["resource_version"] = version
        # the stream may stay quiet up to the server-side timeout: only the connection is bounded by ours
        response = await self._raw(self.apps.list_namespaced_deployment, **{
            **kwargs, "_request_timeout": (self.timeout, WATCH_TIMEOUT_SECONDS + 30)})
        async with response:
            if response.status >= 400:
                raise RuntimeError(f"watch deployments: {response.status} {(await response.read())[:200]!r}")
            while line := await response.content.readline():
                if not line.strip():
                    continue
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object", {})
                if kind == "ERROR":
                    raise RuntimeError(f"watch error: {obj.get('code')} {obj.get('message')}")
                if kind == "BOOKMARK":
                    continue
                name = obj.get("metadata", {}).get("name")
                if kind == "DELETED":
                    self.objects.pop(name, None)
                elif name:
                    self.observe(obj)
                self._changed()
