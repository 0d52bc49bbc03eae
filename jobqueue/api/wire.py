"""The API-only wire shapes: pages, counts, errors, group and schedule rows. Pure data, no I/O.

A job itself is `jobqueue.models.JobRecord` on the wire, as in the SDK.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema

from jobqueue.models import JobRecord, JobStatus, PerformanceSummary
from jobqueue.registry_versions import RegistryVersion


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_NUMBER = re.compile(r"^\s*[-+]?\d+(\.\d*)?\s*$")


def _iso_only(value: object) -> object:
    """A time is ISO 8601 text, as the schema says: pydantic would also take a number as Unix seconds."""
    if isinstance(value, int | float) or (isinstance(value, str) and _NUMBER.match(value)):
        raise ValueError("must be an ISO 8601 time such as 2026-12-01T00:00:00Z, not a number")
    return value


IsoTime = Annotated[datetime, BeforeValidator(_iso_only)]


class QuotaHit(_Wire):
    """The quota a 429 answers (`jobqueue.quotas`)."""

    quota: str = Field(description="`max_queued_per_owner`, `max_queued_per_team`, `max_input_rows` or "
                       "`max_pending_uploads_per_owner`.")
    subject: str = Field(description="The owner or team it applies to.")
    limit: int
    current: int = Field(description="The unfinished jobs counted now, the input's rows, or the upload references "
                         "held.")


class ErrorBody(_Wire):
    """Every error answer (4xx, 5xx)."""

    detail: str = Field(description="What went wrong and, where there is one, the fix.")
    field: str | None = Field(default=None, description="The request field at fault (422), e.g. `output`.")
    reason: str | None = Field(default=None, description="A stable code: for 401 why the token is refused (missing, "
                               "unknown, expired, revoked, or a JWT's reason); for 413 body_too_large; for 429 quota.")
    quota: QuotaHit | None = Field(default=None, description="For 429: the quota hit and its numbers.")


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
    submitted_after: IsoTime | SkipJsonSchema[None] = None
    submitted_before: IsoTime | SkipJsonSchema[None] = None

    @field_validator("*", mode="before")
    @classmethod
    def _not_null(cls, value: object) -> object:
        """A null condition is refused (422 naming it), as the schema says: it is left out or given."""
        if value is None:
            raise ValueError("leave the condition out instead of null")
        return value

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
    attempt_starts: list[datetime] = Field(default_factory=list, description="When each attempt started.")
    attempt_ends: list[datetime] = Field(default_factory=list, description="When each attempt ended.")


HELD_MEANING = "due, but the team runs its limit"  # what `held` means, wherever a group's queue is shown


class GroupStatus(_Wire):
    """One resource group as `jobqueue status --json` shows it."""

    group: str
    min: int | None
    max: int | None
    desired: int | None
    current: int | None
    busy: int | None
    ready: int | None = Field(description="Jobs due now, not running, that a consumer may take (not `held`).")
    in_flight: int | None
    deferred: int | None = Field(description="Jobs queued for later (retry backoff, or a shard held by its query's "
                                 "num_workers).")
    held: int | None = Field(default=None, description=f"Jobs {HELD_MEANING} of running jobs in the group "
                             "(JOBQUEUE_QUOTA_MAX_RUNNING_PER_TEAM): not ready, so they do not scale the group; each "
                             "starts when one of its team's jobs ends.")
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
    scaled_age_seconds: float | None = Field(default=None, description="How long ago the manager last changed the "
                                             "number of consumers (null: not since it started).")
    scaled_from: int | None = Field(default=None, description="The number of consumers before that change.")
    scaled_to: int | None = Field(default=None, description="The number it asked for.")
    scaled_reason: str | None = Field(default=None, description="Why (`queue`, `idle`, `min_instances`, ...).")
    scaled_detail: str | None = None


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


MAX_SCHEDULE_RUNS = 1000  # most runs of a schedule one look asks for


class ScheduleRun(_Wire):
    """One run of a schedule: its job, as far as its record still tells (null status: the record expired)."""

    job_id: str
    status: JobStatus | None = Field(description="The job's state; null once its record expired.")
    submitted_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    duration_seconds: float | None = Field(description="From the start of its last attempt to its end.")
    spilled_bytes: int | None = Field(description="What the query spilled to disk (from its performance summary).")


class ScheduleRuns(_Wire):
    name: str
    runs: list[ScheduleRun] = Field(description="Newest first.")


class ScheduleAction(_Wire):
    name: str
    action: str
    detail: str


class Health(_Wire):
    status: str
    detail: str | None = None


class RegistryVersionBody(_Wire):
    """One registry version: who applied it when, and (except in the history) its content."""

    version: str = Field(description="The version id, `<number>-<hash>`: what a job pins.")
    number: int
    hash: str
    applied_at: datetime
    applied_by: str | None
    origin: str = Field(description="The file it was applied from.")
    namespaces: int
    features: int
    current: bool = Field(description="Whether new jobs are planned against it.")
    document: dict[str, Any] | None = Field(default=None, description="The registry, in its file form (null in "
                                            "the history).")

    @classmethod
    def of(cls, v: RegistryVersion, current: str | None, *, document: bool = True) -> RegistryVersionBody:
        return cls(version=v.id, number=v.number, hash=v.hash, applied_at=v.applied_at, applied_by=v.applied_by,
                   origin=v.origin, namespaces=v.namespace_count, features=v.feature_count, current=v.id == current,
                   document=v.document if document else None)


class RegistryHistory(_Wire):
    current: str | None = Field(description="The current version id (null: none applied yet).")
    versions: list[RegistryVersionBody] = Field(description="Oldest first, without their content.")


class RegistryApplied(_Wire):
    created: bool = Field(description="False: the content was the current version's; nothing was stored.")
    version: RegistryVersionBody
