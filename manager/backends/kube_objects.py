"""The consumer Deployment of a resource group, as a pure function of the group and the settings.

`consumer_deployment()` renders the object the manager applies (server-side apply, field manager
`jobqueue-manager`). Its `jobqueue.io/config-hash` annotation is a digest of everything but the
replica count, so the backend re-applies exactly when the group's config changed.

Consumers get no API credentials and no secrets in the spec: shared settings (Redis URL, registry,
staging, S3) reach them through `env_from` in the groups file (the chart sets it in `defaults`).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from jobqueue.groups import ResourceGroup
from jobqueue.settings import Settings

FIELD_MANAGER = "jobqueue-manager"
GROUP_LABEL = "jobqueue.io/group"
RELEASE_LABEL = "jobqueue.io/release"
ENVIRONMENT_LABEL = "jobqueue.io/environment"
COMPONENT_LABEL = "app.kubernetes.io/component"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
CONFIG_HASH = "jobqueue.io/config-hash"
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
HOME = "/var/lib/jobqueue"
HTTP_PORT = 8080
DRAIN_MARGIN_SECONDS = 15  # the drain ends this long before Kubernetes would SIGKILL


def deployment_name(settings: Settings, group: str) -> str:
    return f"{settings.kubernetes_release}-consumer-{group}"


def selector_labels(settings: Settings, group: str | None = None) -> dict[str, str]:
    """Labels that select this release's consumers (of one group, when given): immutable once applied."""
    labels = {RELEASE_LABEL: settings.kubernetes_release, COMPONENT_LABEL: "consumer"}
    if group is not None:
        labels[GROUP_LABEL] = group
    return labels


def managed_selector(settings: Settings) -> str:
    """The label selector of everything this manager may touch."""
    labels = {**selector_labels(settings), MANAGED_BY_LABEL: FIELD_MANAGER}
    return ",".join(f"{k}={v}" for k, v in labels.items())


def _resources(group: ResourceGroup) -> dict[str, dict[str, str]]:
    requests, limits = dict(group.resources.requests), dict(group.resources.limits)
    if group.memory is not None:  # the group's container memory becomes the cgroup limit
        limits.setdefault("memory", str(group.memory))
        requests.setdefault("memory", limits["memory"])
    return {k: v for k, v in (("requests", requests), ("limits", limits)) if v}


def _env(group: ResourceGroup, settings: Settings, grace: int) -> list[dict[str, Any]]:
    env = {
        "JOBQUEUE_ENVIRONMENT": settings.environment,
        "JOBQUEUE_HOME": HOME,
        "JOBQUEUE_CONSUMER_HTTP_PORT": str(HTTP_PORT),
        "JOBQUEUE_HTTP_HOST": "0.0.0.0",  # noqa: S104 - probed by the kubelet, scraped from outside the pod
        "JOBQUEUE_CONSUMER_DRAIN_SECONDS": str(max(0, grace - DRAIN_MARGIN_SECONDS)),
        "JOBQUEUE_LOG_FORMAT": "json",
        **group.consumer_env(emulate_memory=False),
    }
    rendered: list[dict[str, Any]] = [{"name": "JOBQUEUE_CONSUMER_ID",
                                       "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
    rendered += [{"name": k, "value": v} for k, v in sorted(env.items()) if k != "JOBQUEUE_CONSUMER_ID"]
    return rendered


def _pod_spec(group: ResourceGroup, settings: Settings) -> dict[str, Any]:
    grace = group.termination_grace_period_seconds
    if grace is None:
        grace = settings.consumer_drain_seconds + DRAIN_MARGIN_SECONDS
    image = group.image or settings.kubernetes_consumer_image
    if image is None:
        raise ValueError(f"resource group {group.name!r}: no image; set `image` on the group or in `defaults`, "
                         "or JOBQUEUE_KUBERNETES_CONSUMER_IMAGE")
    probe = {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10, "failureThreshold": 6}
    container: dict[str, Any] = {
        "name": "consumer",
        "image": image,
        "command": ["python", "-m", "consumer"],
        "args": ["--resource-group", group.name, "--max-jobs", str(group.jobs_per_consumer)],
        "env": _env(group, settings, grace),
        "ports": [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"}],
        "livenessProbe": probe,
        "readinessProbe": {**probe, "httpGet": {"path": "/readyz", "port": "http"}, "failureThreshold": 2},
        "volumeMounts": [{"name": "work", "mountPath": HOME}, *group.volume_mounts],
        "securityContext": {
            "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    if group.env_from:
        container["envFrom"] = list(group.env_from)
    if group.image_pull_policy:
        container["imagePullPolicy"] = group.image_pull_policy
    resources = _resources(group)
    if resources:
        container["resources"] = resources
    work: dict[str, Any] = {}
    if "ephemeral-storage" in group.resources.limits:
        work["sizeLimit"] = group.resources.limits["ephemeral-storage"]
    spec: dict[str, Any] = {
        "containers": [container],
        "volumes": [{"name": "work", "emptyDir": work}, *group.volumes],
        "terminationGracePeriodSeconds": grace,
        "automountServiceAccountToken": False,  # consumers never call the Kubernetes API
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "fsGroup": 10001,
                            "seccompProfile": {"type": "RuntimeDefault"}},
    }
    if group.service_account:
        spec["serviceAccountName"] = group.service_account
    if group.image_pull_secrets:
        spec["imagePullSecrets"] = list(group.image_pull_secrets)
    if group.node_selector:
        spec["nodeSelector"] = dict(group.node_selector)
    if group.tolerations:
        spec["tolerations"] = list(group.tolerations)
    return spec


def consumer_deployment(group: ResourceGroup, settings: Settings, replicas: int) -> dict[str, Any]:
    """The whole apply body. Raises ValueError naming the group when it cannot be rendered."""
    selector = selector_labels(settings, group.name)
    labels = {**group.labels, **selector, MANAGED_BY_LABEL: FIELD_MANAGER, ENVIRONMENT_LABEL: settings.environment,
              "app.kubernetes.io/name": "jobqueue", "app.kubernetes.io/instance": settings.kubernetes_release}
    template = {
        "metadata": {"labels": labels, "annotations": dict(group.annotations)},
        "spec": _pod_spec(group, settings),
    }
    spec = {
        "selector": {"matchLabels": selector},
        "revisionHistoryLimit": 3,
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        "template": template,
    }
    digest = hashlib.sha256(json.dumps([labels, spec], sort_keys=True).encode()).hexdigest()[:16]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": deployment_name(settings, group.name),
            "namespace": settings.kubernetes_namespace,
            "labels": labels,
            "annotations": {CONFIG_HASH: digest},
        },
        "spec": {**spec, "replicas": replicas},
    }
