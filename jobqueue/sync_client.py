"""`JobQueueClient`: the synchronous twin of `jobqueue.client.AsyncJobQueueClient`, driving it on a private loop
thread (`jobqueue.sync.LoopThread`). Import it from `jobqueue.client` or `jobqueue`; it lives here to keep one
concept per module."""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobqueue.handles import AsyncLocalResult, JobHandle, LocalResult
from jobqueue.sync import LoopThread

if TYPE_CHECKING:
    from jobqueue.api.wire import (
        CancelManyResult,
        GroupStatus,
        RegistryApplied,
        RegistryHistory,
        RegistryVersionBody,
        ScheduleAction,
        ScheduleList,
        ScheduleRuns,
    )
    from jobqueue.client import AsyncJobQueueClient
    from jobqueue.models import JobRecord
    from jobqueue.registry import Registry
    from jobqueue.settings import Settings


class JobQueueClient:
    """Synchronous twin of `AsyncJobQueueClient`: same arguments, blocking calls."""

    def __init__(self, settings: Settings | None = None, **kwargs: Any) -> None:
        from jobqueue.client import AsyncJobQueueClient  # jobqueue.client imports this module: no cycle at load

        self._async = AsyncJobQueueClient(settings, **kwargs)  # bad settings raise before a thread is started
        self._loop = LoopThread()
        # `close()`, or else garbage collection or interpreter exit, closes the connections on their own loop
        # (never left to the connections' `__del__`, which runs on the wrong thread or during shutdown)
        self._closer = weakref.finalize(self, _close_client, self._loop, self._async)

    @property
    def settings(self) -> Settings:
        return self._async.settings

    def offline_query(
        self, input: Any, output: list[str], input_times: Any = None, **kwargs: Any
    ) -> JobHandle | LocalResult:
        """Submit one offline (point-in-time) query; blocks only while the input is checked and staged.

        `input`: the rows, as a dict of columns, a pandas DataFrame or a pyarrow Table; columns are named
        `<namespace>.<feature>` and include the primary key of each output namespace (`user.id`).
        `output`: the features to fetch, as `<namespace>.<feature>` (`["user.f0"]`).
        `input_times`: the time each row is answered as of, one per row (a list of datetimes, a pandas
        Series or a pyarrow array). Default: now, the submission time, for every row. Naive times are
        UTC. A feature's value is its latest source row with `ts <= input time`.
        Keywords: `run_asynchronously` (default True: queue it and return a `JobHandle`; False: run it in
        this process and return its finished `LocalResult`), `resources=ResourceRequests(resource_group=...)`,
        `max_retries` (default 2) and `completion_deadline` (a time, or a delay from now).

        The result (`to_arrow()`, `to_pandas()`) has the input's columns, then each requested feature not
        already among them, in a column named `<namespace>.<feature>` (`user.f0`); rows in input order.
        `performance_summary` is a `jobqueue.PerformanceSummary` (a pydantic model: attributes,
        `.model_dump()` for a dict), set once the job has succeeded. Raises `InvalidQueryError` (naming the
        argument) before anything is submitted, and `RedisUnavailableError` when Redis cannot be reached.
        """
        result = self._loop.run(self._async.offline_query(input, output, input_times, **kwargs))
        if isinstance(result, AsyncLocalResult):
            return LocalResult(result, self._loop)
        return JobHandle(result, self._loop)

    def job(self, job_id: str) -> JobHandle:
        """A handle on a submitted job, by its id or a unique prefix of it."""
        return JobHandle(self._async.job(self._loop.run(self._async.resolve_job_id(job_id))), self._loop)

    def get_job(self, job_id: str) -> JobRecord:
        return self._loop.run(self._async.get_job(job_id))

    def cancel(self, job_id: str, wait: float | None = 30.0) -> JobRecord:
        return self._loop.run(self._async.cancel(job_id, wait))

    def jobs(self, **filters: Any) -> list[JobRecord]:
        """See `AsyncJobQueueClient.jobs`: owner, team, state, resource_group, tags, query_name,
        submitted_after, submitted_before, limit, parent, include_shards."""
        return self._loop.run(self._async.jobs(**filters))

    def cancel_many(self, **filters: Any) -> CancelManyResult:
        return self._loop.run(self._async.cancel_many(**filters))

    def groups(self) -> list[GroupStatus]:
        return self._loop.run(self._async.groups())

    status = groups

    def schedules(self) -> ScheduleList:
        return self._loop.run(self._async.schedules())

    def schedule_runs(self, name: str, limit: int = 10) -> ScheduleRuns:
        return self._loop.run(self._async.schedule_runs(name, limit))

    def run_schedule(self, name: str) -> ScheduleAction:
        return self._loop.run(self._async.run_schedule(name))

    def pause_schedule(self, name: str) -> ScheduleAction:
        return self._loop.run(self._async.pause_schedule(name))

    def resume_schedule(self, name: str) -> ScheduleAction:
        return self._loop.run(self._async.resume_schedule(name))

    def registry_current(self) -> RegistryVersionBody:
        return self._loop.run(self._async.registry_current())

    def registry_history(self) -> RegistryHistory:
        return self._loop.run(self._async.registry_history())

    def registry_version(self, ref: str) -> RegistryVersionBody:
        return self._loop.run(self._async.registry_version(ref))

    def apply_registry(self, registry: Path | str | Registry, applied_by: str | None = None) -> RegistryApplied:
        return self._loop.run(self._async.apply_registry(registry, applied_by))

    def close(self) -> None:
        """Close the Redis connections and stop the client's loop thread; a second call does nothing."""
        self._closer()

    def __enter__(self) -> JobQueueClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _close_client(loop: LoopThread, client: AsyncJobQueueClient) -> None:
    if loop.is_current():  # collected on its own loop thread: it cannot wait for itself; the loop dies with it
        return
    try:
        loop.run(client.aclose())
    finally:
        loop.stop()
