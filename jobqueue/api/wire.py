"""The API-only wire shapes: pages, counts, errors, group and schedule rows. Pure data, no I/O.

A job itself is `jobqueue.models.JobRecord` on the wire, as in the SDK.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic.json_schema import SkipJsonSchema

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


_Text = Annotated[str, StringConstraints(min_length=1)]


def _conditions_schema(schema: dict[str, Any]) -> None:
    """At least one condition, and none null: an absent condition is left out (no `default: null` either)."""
    schema["minProperties"] = 1
    for prop in schema.get("properties", {}).values():
        prop.pop("default", None)


class CancelFilter(_Wire):
    """Which jobs `POST /v1/jobs/cancel` cancels: every condition given must hold; at least one is needed. A
    condition is left out, never null."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=_conditions_schema)

    owner: _Text | SkipJsonSchema[None] = None
    team: _Text | SkipJsonSchema[None] = None
    state: JobStatus | SkipJsonSchema[None] = None
    resource_group: _Text | SkipJsonSchema[None] = None
    tags: Annotated[dict[str, str], Field(min_length=1)] | SkipJsonSchema[None] = Field(
        default=None, description="Each tag must be present with this value.")
    query_name: _Text | SkipJsonSchema[None] = None
    submitted_after: datetime | SkipJsonSchema[None] = None
    submitted_before: datetime | SkipJsonSchema[None] = None

    @model_validator(mode="after")
    def _narrows(self) -> CancelFilter:
        if not self.model_dump(exclude_none=True):
            raise ValueError("give at least one condition (owner, team, state, resource_group, tags, query_name, "
                             "submitted_after or submitted_before)")
        return self


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
