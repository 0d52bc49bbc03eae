"""jobqueue: async job queue for offline (batch, point-in-time) feature queries.

The layer that `manager/` and `consumer/` both stand on, plus the client side:
- the contract, pure (no I/O but reading their own config file): `settings`, `models`, `keys` (every
  Redis key), `registry`, `registry_versions`, `groups`, `schedules`, `plan` (`plan_query()`), `waiting`
  (`why_waiting()`), `sizes`, `errors`, `serializer`;
- the shared I/O: `jobstore` (job state in Redis: its one writer), `registry_store` (registry versions in Redis),
  `redis` (`connect_redis`),
  `storage` (Parquet on local disk or an object store), `entries` (rejecting bad queue entries);
- `engine/`: the query engine on DuckDB, shared by the consumers and the SDK's in-process mode;
- the SDK (`client`, `handles`, `inputs`, `sync`, `wait_observe`) and the CLI (`cli/`, the composition root);
- process helpers: `logs`, `outage`, `preflight`, `ops_server`, `embedded`, `profiler/`.

Import rule: nothing here imports `manager` or `consumer`, except the CLI commands that start those
processes (`jobqueue/cli/__init__.py`; `tests/unit/test_layers.py` walks the graph).

The public names below are imported on first use, so that `import jobqueue.settings` (the
profiler, the CLI's light commands) does not load pandas, pyarrow and DuckDB.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jobqueue.client import AsyncJobQueueClient, JobQueueClient
    from jobqueue.errors import (
        AmbiguousJobIdError,
        AuthenticationError,
        ConfigError,
        InvalidQueryError,
        JobCancelledError,
        JobFailedError,
        JobNotFoundError,
        JobQueueError,
        JobStateError,
        QuotaExceededError,
        RedisUnavailableError,
        ResultGoneError,
        SettingsError,
    )
    from jobqueue.handles import AsyncJobHandle, JobHandle, LocalResult
    from jobqueue.models import JobRecord, JobStatus, PerformanceSummary, ResourceRequests, WaitCode, WaitReason
    from jobqueue.schedules import ScheduledQuery
    from jobqueue.settings import Settings, load_settings

_HOMES = {
    "jobqueue.client": ("AsyncJobQueueClient", "JobQueueClient"),
    "jobqueue.errors": ("AmbiguousJobIdError", "AuthenticationError", "ConfigError", "InvalidQueryError",
                        "JobCancelledError", "JobFailedError", "JobNotFoundError", "JobQueueError", "JobStateError",
                        "QuotaExceededError", "RedisUnavailableError", "ResultGoneError", "SettingsError"),
    "jobqueue.handles": ("AsyncJobHandle", "JobHandle", "LocalResult"),
    "jobqueue.models": ("JobRecord", "JobStatus", "PerformanceSummary", "ResourceRequests", "WaitCode", "WaitReason"),
    "jobqueue.schedules": ("ScheduledQuery",),
    "jobqueue.settings": ("Settings", "load_settings"),
}
_MODULE_OF = {name: module for module, names in _HOMES.items() for name in names}
__all__ = [
    "AmbiguousJobIdError", "AsyncJobHandle", "AsyncJobQueueClient", "AuthenticationError", "ConfigError",
    "InvalidQueryError",
    "JobCancelledError", "JobFailedError", "JobHandle", "JobNotFoundError", "JobQueueClient", "JobQueueError",
    "JobRecord",
    "JobStateError", "JobStatus", "LocalResult", "PerformanceSummary", "QuotaExceededError", "RedisUnavailableError",
    "ResourceRequests",
    "ResultGoneError", "ScheduledQuery", "Settings", "SettingsError", "WaitCode", "WaitReason", "load_settings",
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
