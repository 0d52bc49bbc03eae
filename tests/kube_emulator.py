"""kmock's stateful `KubernetesEmulator`, extended with what the manager relies on.

kmock 0.8 serves objects over real HTTP but lacks: PUT, `labelSelector`, resourceVersion (and so
409 conflicts), server-side apply of a missing object, the `scale` subresource, namespace stamping
from the URL, and `watch=True` (only `watch=true`). This adds them, plus:
- a small Deployment controller: pods follow `spec.replicas`; a scale-down removes pods with the
  lowest `controller.kubernetes.io/pod-deletion-cost` first, as the ReplicaSet controller does
  (Kubernetes >= 1.22), so tests can check which pods survive;
- injected faults: `emulator.fail("PATCH", "deployments", 409, times=2)`, or a hang: `status=None, delay=5`;
- a record of scale writes with their arrival time, for the latency benchmark.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import aiohttp.web
import attrs
import kmock
from kmock._internal.k8s import KubernetesError, KubernetesObjectConflictError, KubernetesObjectNotFoundError

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
PODS = kmock.resource("", "v1", "pods")


@dataclass
class Fault:
    method: str
    plural: str
    status: int | None  # None: answer normally, after `delay`
    times: int
    subresource: str | None = None
    delay: float = 0.0


def parse_selector(text: str | None) -> list[tuple[str, str, str | None]]:
    """Equality-based selectors: `a=b`, `a==b`, `a!=b`, `a` (exists), `!a` (absent)."""
    terms: list[tuple[str, str, str | None]] = []
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        if "!=" in part:
            key, value = part.split("!=", 1)
            terms.append((key.strip(), "!=", value.strip()))
        elif "=" in part:
            key, value = part.replace("==", "=").split("=", 1)
            terms.append((key.strip(), "=", value.strip()))
        elif part.startswith("!"):
            terms.append((part[1:], "absent", None))
        else:
            terms.append((part, "exists", None))
    return terms


def matches(labels: dict[str, str], terms: list[tuple[str, str, str | None]]) -> bool:
    for key, op, value in terms:
        if (op == "=" and labels.get(key) != value) or (op == "!=" and labels.get(key) == value) or (
                op == "exists" and key not in labels) or (op == "absent" and key in labels):
            return False
    return True


@attrs.define(kw_only=True)
class ClusterEmulator(kmock.KubernetesEmulator):
    faults: list[Fault] = attrs.field(factory=list)
    # replica writes (scale subresource or apply), for the latency benchmark: (monotonic, deployment, replicas)
    scale_writes: list[tuple[float, str, int]] = attrs.field(factory=list)
    _revision: itertools.count[int] = attrs.field(factory=lambda: itertools.count(1))

    def fail(self, method: str, plural: str, status: int | None, times: int = 1, subresource: str | None = None,
             delay: float = 0.0) -> None:
        self.faults.append(Fault(method.upper(), plural, status, times, subresource, delay))

    async def oom_kill_pod(self, namespace: str, name: str, finished_at: float) -> None:
        """What the kubelet reports after the kernel OOM-killed a pod's container and restarted it."""
        pod = self._live(PODS, namespace, name)
        assert pod is not None, f"no pod {namespace}/{name}"
        finished = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(finished_at))
        pod["status"] = {**pod.get("status", {}), "containerStatuses": [{
            "name": pod["spec"]["containers"][0]["name"], "restartCount": 1, "ready": True,
            "state": {"running": {"startedAt": finished}},
            "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137, "finishedAt": finished,
                                         "containerID": f"containerd://{uuid.uuid4().hex}"}}}]}
        await self._store(PODS, pod, "MODIFIED")

    # --- helpers over kmock's object store ---------------------------------------------------------
    def _live(self, resource: Any, namespace: str | None, name: str) -> dict[str, Any] | None:
        key = (resource, namespace, name)
        if key not in self._objects or self._objects[key].deleted:
            return None
        return copy.deepcopy(self._objects[key].raw)

    def items(self, resource: Any, namespace: str | None, selector: str | None = None) -> list[dict[str, Any]]:
        terms = parse_selector(selector)
        out = []
        for (res, ns, _), obj in self._objects.items():
            if res == resource and (namespace is None or ns == namespace) and not obj.deleted:
                raw = obj.raw
                if matches(raw.get("metadata", {}).get("labels") or {}, terms):
                    out.append(copy.deepcopy(raw))
        return out

    async def _store(self, resource: Any, obj: dict[str, Any], event: str) -> dict[str, Any]:
        meta = obj["metadata"]
        meta["resourceVersion"] = str(next(self._revision))
        key = (resource, meta.get("namespace"), meta["name"])
        if key not in self._objects:
            self._objects[key] = obj
        else:
            self._objects[key].create(obj)  # a new version that replaces the old one
        await self._buses[resource].put({"type": event, "object": copy.deepcopy(obj)})
        return obj

    async def _remove(self, resource: Any, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        self._objects[(resource, meta.get("namespace"), meta["name"])].delete()
        await self._buses[resource].put({"type": "DELETED", "object": obj})

    # --- request handling ----------------------------------------------------------------------------
    async def _handle(self, request: Any) -> aiohttp.web.StreamResponse:
        if request.resource is None:
            return await super()._handle(request)
        method = str(request.method.value).upper()
        for fault in self.faults:
            if fault.times > 0 and fault.method == method and fault.plural == request.resource.plural and (
                    fault.subresource is None or fault.subresource == request.subresource):
                fault.times -= 1
                if fault.delay:
                    await asyncio.sleep(fault.delay)  # a hung API server, as the client sees it
                if fault.status is not None:
                    raise KubernetesError(status=fault.status, reason="Injected", message=f"injected {fault.status}")
                break
        if method == "GET" and request.params.get("watch", "").lower() == "true":  # kmock wants "true" only
            return await self._stream(request)
        if method == "GET" and request.name is None:
            return aiohttp.web.json_response({
                "kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": str(next(self._revision))},
                "items": self.items(request.resource, request.namespace, request.params.get("labelSelector")),
            })
        async with self._lock:
            body = await self._write(request, method)
        return aiohttp.web.json_response(body)

    async def _write(self, request: Any, method: str) -> dict[str, Any]:
        res, ns, name = request.resource, request.namespace, request.name
        if method == "POST":
            return await self._create(res, ns, copy.deepcopy(request.data))
        current = self._live(res, ns, name)
        if current is None and not (method == "PATCH" and "apply-patch" in request.headers.get("Content-Type", "")):
            raise KubernetesObjectNotFoundError()
        if method == "GET":
            return self._scale_view(current) if request.subresource == "scale" else current
        if method == "DELETE":
            await self._remove(res, current)
            await self._after(res, current, deleted=True)
            return {"kind": "Status", "apiVersion": "v1", "status": "Success", "details": {"name": name}}
        if request.subresource == "scale":
            replicas = int(request.data["spec"]["replicas"])
            self.scale_writes.append((time.monotonic(), name, replicas))
            current["spec"]["replicas"] = replicas
            current["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
            return self._scale_view(await self._after(res, await self._store(res, current, "MODIFIED")))
        if method == "PUT":
            return await self._replace(res, ns, name, current, copy.deepcopy(request.data))
        if method == "PATCH":
            if res.plural == "deployments" and "replicas" in (request.data.get("spec") or {}):
                self.scale_writes.append((time.monotonic(), name, int(request.data["spec"]["replicas"])))
            if current is None:  # server-side apply creates
                return await self._create(res, ns, copy.deepcopy(request.data))
            key = (res, ns, name)
            self._objects[key].patch(request.data)
            obj = copy.deepcopy(self._objects[key].raw)
            obj["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
            return await self._after(res, await self._store(res, obj, "MODIFIED"))
        raise KubernetesError(status=405, reason="MethodNotAllowed", message=f"{method} is not emulated")

    async def _create(self, res: Any, ns: str | None, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj.setdefault("metadata", {})
        meta["namespace"] = meta.get("namespace") or ns
        if self._live(res, meta["namespace"], meta["name"]) is not None:
            raise KubernetesObjectConflictError()
        meta.update(uid=str(uuid.uuid4()), generation=1,
                    creationTimestamp=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        return await self._after(res, await self._store(res, obj, "ADDED"))

    async def _replace(self, res: Any, ns: str | None, name: str, current: dict[str, Any],
                       obj: dict[str, Any]) -> dict[str, Any]:
        sent = (obj.get("metadata") or {}).get("resourceVersion")
        if sent and sent != current["metadata"]["resourceVersion"]:
            raise KubernetesError(status=409, reason="Conflict", message="the object has been modified; please "
                                  "apply your changes to the latest version and try again")
        obj["metadata"] = {**current["metadata"], **obj.get("metadata", {}), "namespace": ns, "name": name}
        return await self._after(res, await self._store(res, obj, "MODIFIED"))

    @staticmethod
    def _scale_view(dep: dict[str, Any]) -> dict[str, Any]:
        meta = dep["metadata"]
        return {"kind": "Scale", "apiVersion": "autoscaling/v1",
                "metadata": {"name": meta["name"], "namespace": meta.get("namespace"),
                             "resourceVersion": meta["resourceVersion"]},
                "spec": {"replicas": dep["spec"].get("replicas", 1)},
                "status": {"replicas": dep.get("status", {}).get("replicas", 0)}}

    # --- the Deployment controller --------------------------------------------------------------------
    async def _after(self, resource: Any, obj: dict[str, Any], deleted: bool = False) -> dict[str, Any]:
        if resource.plural != "deployments":
            return obj
        ns = obj["metadata"].get("namespace")
        selector = ",".join(f"{k}={v}" for k, v in obj["spec"]["selector"]["matchLabels"].items())
        pods = self.items(PODS, ns, selector)
        want = 0 if deleted else int(obj["spec"].get("replicas", 1))
        if len(pods) > want:  # lowest deletion cost first, then the youngest
            pods.sort(key=lambda p: (int((p["metadata"].get("annotations") or {}).get(DELETION_COST, "0")),
                                     -int(p["metadata"]["resourceVersion"])))
            for pod in pods[: len(pods) - want]:
                await self._remove(PODS, pod)
            pods = pods[len(pods) - want:]
        template = obj["spec"]["template"]
        while len(pods) < want:
            pod = {"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": f"{obj['metadata']['name']}-{uuid.uuid4().hex[:5]}", "namespace": ns,
                                "labels": dict(template["metadata"].get("labels") or {}),
                                "annotations": dict(template["metadata"].get("annotations") or {}),
                                "uid": str(uuid.uuid4())},
                   "spec": copy.deepcopy(template["spec"]), "status": {"phase": "Running"}}
            pods.append(await self._store(PODS, pod, "ADDED"))
        if deleted:
            return obj
        obj["status"] = {"replicas": want, "readyReplicas": want, "availableReplicas": want,
                         "updatedReplicas": want, "observedGeneration": obj["metadata"].get("generation", 1)}
        return await self._store(resource, obj, "MODIFIED")

    # --- watch with labelSelector and resourceVersion ------------------------------------------------
    async def _stream(self, request: Any) -> aiohttp.web.StreamResponse:
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request._raw_request)
        try:
            async for event in self._events(request):
                await response.write(json.dumps(event).encode() + b"\n")
        except ConnectionResetError:
            pass
        return response

    async def _events(self, request: Any) -> Any:
        selector = request.params.get("labelSelector")
        since = request.params.get("resourceVersion", "")
        since_rv = int(since) if since.isdigit() else 0
        terms = parse_selector(selector)
        for obj in self.items(request.resource, request.namespace, selector):
            if int(obj["metadata"]["resourceVersion"]) > since_rv:
                yield {"type": "ADDED", "object": obj}
        async for event in self._buses[request.resource]:
            meta = event.get("object", {}).get("metadata", {})
            if request.namespace not in (None, meta.get("namespace")):
                continue
            if int(meta.get("resourceVersion") or 0) > since_rv and matches(meta.get("labels") or {}, terms):
                yield event
