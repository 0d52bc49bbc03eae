"""The API-only wire shapes: pages, counts, errors, group and schedule rows. Pure data, no I/O.

A job itself is `jobqueue.models.JobRecord` on the wire, as in the SDK.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from jobqueue.models import JobRecord, JobStatus, PerformanceSummary


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ErrorBody(_Wire):
    """Every error answer (4xx, 5xx)."""

    detail: str = Field(description="What went wrong and, where there is one, the fix.")
    field: str | None = Field(default=None, description="The request field at fault (422), e.g. `output`.")
    reason: str | None = Field(default=None, description="A stable code: for 401 missing, unknown, expired or "
                               "revoked; for 413 body_too_large.")


class JobPage(_Wire):
    """One page of a job listing, newest first."""

    jobs: list[JobRecord]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null: no more jobs.")


class CancelManyResult(_Wire):
    cancelled: int = Field(description="Jobs cancelled (queued) or asked to stop (running).")
    job_ids: list[str]


class JobSummary(_Wire):
    """A job's performance summary and attempts."""

    job_id: str
    status: JobStatus
    attempts: int
    max_retries: int
    errors: list[str] = Field(description="One entry per failed attempt, oldest first.")
    error: str | None
    summary: PerformanceSummary | None


class GroupStatus(_Wire):
    """One resource group as `jobqueue status --json` shows it."""

    group: str
    min: int | None
    max: int | None
    desired: int | None
    current: int | None
    busy: int | None
    ready: int | None
    in_flight: int | None
    deferred: int | None
    consumers_ready: int | None
    oldest_wait_seconds: float | None
    decision: str | None
    detail: str | None
    error: str | None
    start_trouble: str | None
    configured: bool
    age_seconds: float | None
    manager_tick_age_seconds: float | None
    manager_stale: bool


class ScheduleInfo(_Wire):
    name: str
    schedule: str
    timezone: str
    resource_group: str
    enabled: bool
    paused: bool
    next_due: datetime | None
    last_job: str | None
    last_due: str | None
    last_reason: str | None
    definition: dict[str, Any] = Field(description="The schedule as the manager loaded it.")


class ScheduleList(_Wire):
    schedules: list[ScheduleInfo]
    errors: list[str] = Field(description="Schedules the manager could not load, and why.")


class ScheduleAction(_Wire):
    name: str
    action: str
    detail: str


class Health(_Wire):
    status: str
    detail: str | None = None
