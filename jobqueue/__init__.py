"""jobqueue: async job queue for offline (batch, point-in-time) feature queries.

This package is the shared contract (settings, models, Redis layout, registry, plan) plus the
SDK and the CLI. The manager lives in `manager/`, consumers in `consumer/`.
"""

from jobqueue.client import AsyncJobQueueClient, JobQueueClient
from jobqueue.errors import (
    ConfigError,
    InvalidQueryError,
    JobCancelledError,
    JobFailedError,
    JobNotFoundError,
    JobQueueError,
    JobStateError,
    RedisUnavailableError,
)
from jobqueue.handles import AsyncJobHandle, JobHandle, LocalResult
from jobqueue.models import JobRecord, JobStatus, PerformanceSummary, ResourceRequests
from jobqueue.schedules import ScheduledQuery
from jobqueue.settings import Settings, load_settings

__all__ = [
    "AsyncJobHandle",
    "AsyncJobQueueClient",
    "ConfigError",
    "InvalidQueryError",
    "JobCancelledError",
    "JobFailedError",
    "JobHandle",
    "JobNotFoundError",
    "JobQueueClient",
    "JobQueueError",
    "JobRecord",
    "JobStateError",
    "RedisUnavailableError",
    "JobStatus",
    "LocalResult",
    "PerformanceSummary",
    "ResourceRequests",
    "ScheduledQuery",
    "Settings",
    "load_settings",
]
