"""jobqueue: async job queue for offline (batch, point-in-time) feature queries.

This package is the shared contract (settings, models, Redis layout, registry, plan) plus the
SDK and the CLI. The manager lives in `manager/`, consumers in `consumer/`.

The public names below are imported on first use, so that `import jobqueue.settings` (the
profiler, the CLI's light commands) does not load pandas, pyarrow and DuckDB.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
        ResultGoneError,
        SettingsError,
    )
    from jobqueue.handles import AsyncJobHandle, JobHandle, LocalResult
    from jobqueue.models import JobRecord, JobStatus, PerformanceSummary, ResourceRequests
    from jobqueue.schedules import ScheduledQuery
    from jobqueue.settings import Settings, load_settings

_HOMES = {
    "jobqueue.client": ("AsyncJobQueueClient", "JobQueueClient"),
    "jobqueue.errors": ("ConfigError", "InvalidQueryError", "JobCancelledError", "JobFailedError",
                        "JobNotFoundError", "JobQueueError", "JobStateError", "RedisUnavailableError",
                        "ResultGoneError", "SettingsError"),
    "jobqueue.handles": ("AsyncJobHandle", "JobHandle", "LocalResult"),
    "jobqueue.models": ("JobRecord", "JobStatus", "PerformanceSummary", "ResourceRequests"),
    "jobqueue.schedules": ("ScheduledQuery",),
    "jobqueue.settings": ("Settings", "load_settings"),
}
_MODULE_OF = {name: module for module, names in _HOMES.items() for name in names}
__all__ = [
    "AsyncJobHandle", "AsyncJobQueueClient", "ConfigError", "InvalidQueryError", "JobCancelledError",
    "JobFailedError", "JobHandle", "JobNotFoundError", "JobQueueClient", "JobQueueError", "JobRecord",
    "JobStateError", "JobStatus", "LocalResult", "PerformanceSummary", "RedisUnavailableError", "ResourceRequests",
    "ResultGoneError", "ScheduledQuery", "Settings", "SettingsError", "load_settings",
]
assert sorted(__all__) == sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'jobqueue' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
