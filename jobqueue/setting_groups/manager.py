"""The manager: its garbage collector, its loop and the ops endpoints (/metrics, /healthz, /readyz) it and the
consumers serve; and how it scales consumers (locally or on Kubernetes)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings


class ManagerSettings(BaseSettings):
    gc_interval_seconds: float = Field(
        default=300.0, ge=0,
        description="How often the manager (the leader) runs the garbage collector: expired results, staged "
        "inputs no job needs, index entries of expired records. 0: never (e.g. with S3 lifecycle rules).",
    )
    gc_batch_size: int = Field(
        default=1000, gt=0,
        description="Items of each kind one garbage collector run examines at most; the next run goes on "
        "where it stopped.",
    )
    gc_grace_seconds: float = Field(
        default=3600.0, ge=0,
        description="A staged input without a job record, or the result folder of a job that did not succeed, "
        "is removed only once it is this old (a submission stages its input before it writes the record).",
    )
    quota_recount_seconds: float = Field(
        default=300.0, ge=0,
        description="How often the manager (the leader) recounts the queued-jobs quota counts from the live job "
        "records and lowers those that are too high (a record that expired before its job ended leaves its count "
        "one too high). 0: never.",
    )
    manager_tick_seconds: float = Field(
        default=0.5, gt=0, description="Manager reconcile period: observe queues, decide, act."
    )
    manager_wake_gap_seconds: float = Field(
        default=0.1, ge=0,
        description="A submission wakes the manager for a tick at once, but not again within this many seconds of "
        "the last tick a submission started: a burst of submissions costs one tick per gap, not one per submission "
        "(back to back, the ticks took a quarter of a core at 380 submissions/s). 0: every submission wakes it.",
    )
    manager_http_port: int = Field(
        default=9464, ge=-1, le=65535,
        description="Manager port for /metrics, /healthz, /readyz (0: any free port; -1: off).",
    )
    http_host: str = Field(
        default="127.0.0.1", min_length=1,
        description="Address the manager's and consumers' /metrics, /healthz, /readyz endpoints bind: loopback "
        "by default; `0.0.0.0` to be scraped and probed from outside (the chart and the Kubernetes backend set it).",
    )
    http_max_connections: int = Field(
        default=64, ge=1, description="Connections an endpoint holds at once; one more is closed at once.",
    )
    http_request_timeout_seconds: float = Field(
        default=10.0, gt=0, description="A client of those endpoints has this long to send its request, and as "
        "long again to take the answer; a slower or idle connection is dropped.",
    )


class ScalingSettings(BaseSettings):
    # the queue/consumer history the manager samples while it reconciles (manager/reconcile.py)
    group_history_seconds: float = Field(
        default=30.0, ge=1,
        description="The manager keeps one sample per resource group per this many seconds (the peaks of its queue "
        "and consumers in that time), for the last hour: the web console's sparklines (`<p>group-history:<group>`; "
        "30 s: one sample per pixel).",
    )
    scale_down_stabilization_seconds: float = Field(
        default=30.0,
        ge=0,
        description="Scale down only to the highest replica count recommended during this window.",
    )
    scale_to_zero_cooldown_seconds: float = Field(
        default=60.0, ge=0, description="A group scales to zero only after this long with no work."
    )
    consumer_stale_seconds: float = Field(
        default=15.0, gt=0, description="A consumer whose heartbeat is older than this is considered gone."
    )
    scaler_backend: Literal["local", "kubernetes"] = Field(
        default="local", description="How the manager runs consumers: local processes or Kubernetes."
    )
    kubernetes_namespace: str = Field(
        default="default", description="Namespace of the consumer Deployments and the leader Lease (the "
        "chart sets it to the release namespace)."
    )
    kubernetes_release: str = Field(
        default="jobqueue", pattern=r"^[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?$",
        description="Prefix of every object the manager creates: Deployment `<release>-consumer-<group>`, "
        "Lease `<release>-manager`. Objects also carry the label `jobqueue.io/release`.",
    )
    kubernetes_consumer_image: str | None = Field(
        default=None, description="Consumer image for groups that set none (the chart passes its own image)."
    )
    kubeconfig: Path | None = Field(
        default=None, description="Kubeconfig for the Kubernetes backend; unset: the in-cluster service account."
    )
    kubernetes_lease_seconds: int = Field(
        default=15, ge=2, description="Leader Lease duration: a standby manager takes over this long after the "
        "leader stops renewing. Renewal deadline is 2/3 of it, retries every 1/5 (at least 1 s).",
    )
    kubernetes_request_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Timeout of one Kubernetes API call (retried with backoff), so a hung API "
        "server cannot stall the manager's loop.",
    )
    kubernetes_busy_deletion_cost: int = Field(
        default=1_000_000, ge=1, description="`controller.kubernetes.io/pod-deletion-cost` put on a busy consumer's "
        "pod before a scale-down (idle pods get 0), so the ReplicaSet removes idle pods first.",
    )
    pod_name: str | None = Field(
        default=None, description="This manager's identity for leader election (the chart sets it from the pod "
        "name). Default `<hostname>-<pid>`.",
    )
