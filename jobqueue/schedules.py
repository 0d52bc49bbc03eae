"""Scheduled (cron) offline queries: definitions and their validation. Pure, no I/O but reading the file.

    schedules:
      - name: nightly_user_features
        schedule: "30 2 * * *"          # cron, evaluated in `timezone` (DST as cron does it)
        timezone: Europe/Berlin
        output: [user.f0, user.txn_sum_30d]
        resource_group: default
        input: {user.id: [1, 2, 3]}      # the spine; or input_path: a Parquet file of input columns
        lower_bound: 2026-01-01T00:00:00Z  # optional: no runs before / after
        upper_bound: null
        max_retries: 2
        completion_deadline: 1h          # after the due time
        missed: skip                     # or run_once: one run for the latest missed time
        allow_overlap: false             # skip a due run while the previous one is queued or running
        enabled: true
        query_name: nightly_user_features  # optional attribution (`jobqueue.attribution`); query_name defaults
        owner: risk-bot                    # to the schedule's name, owner to `scheduler`; the correlation id
        team: risk                         # of a run is its job id
        tags: {project: churn}

Field names follow chalkpy's `ScheduledQuery` where it has them. A bad definition is reported
with its name and does not stop the others from loading.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from cronsim import CronSim, CronSimError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from jobqueue.attribution import Attribution, check_attribution
from jobqueue.errors import ConfigError, InvalidQueryError
from jobqueue.groups import ResourceGroup
from jobqueue.plan import plan_query
from jobqueue.registry import Registry, parse_window

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,99}$")
SCHEDULER_OWNER = "scheduler"  # the owner of a scheduled run whose schedule names none


class ScheduledQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    schedule: str
    output: list[str] = Field(min_length=1)
    resource_group: str = "default"
    input: dict[str, list[Any]] | None = None
    input_path: str | None = None
    timezone: str = "UTC"
    lower_bound: datetime | None = None
    upper_bound: datetime | None = None
    max_retries: int = Field(default=2, ge=0, le=100)
    completion_deadline: str | None = Field(default=None, description="after the due time, e.g. 1h, 30m")
    missed: Literal["skip", "run_once"] = "skip"
    allow_overlap: bool = False
    enabled: bool = True
    query_name: str | None = None
    owner: str | None = None
    team: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError("name must be lowercase letters, digits, '_' or '-' (it is part of job ids)")
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {v!r}; use an IANA name such as Europe/Berlin") from None
        return v

    @field_validator("schedule")
    @classmethod
    def _cron(cls, v: str) -> str:
        try:
            CronSim(v, datetime(2026, 1, 1, tzinfo=UTC))
        except CronSimError as e:
            raise ValueError(f"bad cron expression {v!r}: {e}") from None
        return v

    @field_validator("completion_deadline")
    @classmethod
    def _deadline(cls, v: str | None) -> str | None:
        if v is not None:
            parse_window(v)
        return v

    @model_validator(mode="after")
    def _spine(self) -> ScheduledQuery:
        if (self.input is None) == (self.input_path is None):
            raise ValueError("give exactly one of 'input' (columns) or 'input_path' (a Parquet spine)")
        for name in ("lower_bound", "upper_bound"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                object.__setattr__(self, name, value.replace(tzinfo=UTC))
        return self

    @model_validator(mode="after")
    def _attribution(self) -> ScheduledQuery:
        try:
            self.attribution("check")
        except InvalidQueryError as e:
            raise ValueError(str(e)) from None
        return self

    def attribution(self, job_id: str) -> Attribution:
        """The attribution of the run `job_id`."""
        return check_attribution(self.owner or SCHEDULER_OWNER, self.team, self.tags, self.query_name or self.name,
                                 job_id)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def deadline(self) -> timedelta | None:
        return timedelta(seconds=parse_window(self.completion_deadline)) if self.completion_deadline else None

    def occurrences_after(self, after: datetime) -> CronSim:
        """Due times strictly after `after`, in order, as aware datetimes in the schedule's zone."""
        return CronSim(self.schedule, after.astimezone(self.zone))

    def in_bounds(self, due: datetime) -> bool:
        return (self.lower_bound is None or due >= self.lower_bound) and (
            self.upper_bound is None or due <= self.upper_bound
        )


def next_due(sq: ScheduledQuery, after: datetime) -> datetime | None:
    """The first due time after `after` within the bounds, or None (pure; `jobqueue schedules` shows it)."""
    for due in sq.occurrences_after(after):
        if sq.upper_bound is not None and due > sq.upper_bound:
            return None
        if sq.in_bounds(due):
            return due
    return None


def parse_schedules(
    data: object, registry: Registry, groups: dict[str, ResourceGroup], source: str = "<schedules>"
) -> tuple[dict[str, ScheduledQuery], list[str]]:
    """Valid schedules by name, and one error message per bad definition (naming it)."""
    if data is None:
        return {}, []
    if not isinstance(data, dict) or not isinstance(data.get("schedules", []), list):
        raise ConfigError(f"{source}: expected a mapping with key 'schedules: [{{name: ..., schedule: ...}}]'")
    valid: dict[str, ScheduledQuery] = {}
    errors: list[str] = []
    for i, body in enumerate(data.get("schedules") or []):
        name = body.get("name", f"#{i}") if isinstance(body, dict) else f"#{i}"
        where = f"{source}: schedule {name!r}"
        try:
            sq = ScheduledQuery.model_validate(body)
        except ValidationError as e:
            err = e.errors()[0]
            loc = ".".join(str(p) for p in err["loc"])
            errors.append(f"{where}: {loc + ': ' if loc else ''}{err['msg']}")
            continue
        if sq.name in valid:
            errors.append(f"{where}: duplicate name; schedule names must be unique")
            continue
        if sq.resource_group not in groups:
            errors.append(f"{where}: unknown resource group {sq.resource_group!r}; known: {', '.join(sorted(groups))}")
            continue
        try:
            plan_query(spine_columns(sq, registry), sq.output, registry)
        except InvalidQueryError as e:
            errors.append(f"{where}: {e}")
            continue
        valid[sq.name] = sq
    return valid, errors


def spine_columns(sq: ScheduledQuery, registry: Registry) -> list[str]:
    """The spine's input columns: those of `input`, or for a Parquet spine the primary keys of the
    output's namespaces (the file must hold them)."""
    if sq.input is not None:
        return list(sq.input)
    namespaces = dict.fromkeys(f.partition(".")[0] for f in sq.output)
    return [registry.namespaces[ns].key_feature for ns in namespaces if ns in registry.namespaces]


def load_schedules(
    path: Path | None, registry: Registry, groups: dict[str, ResourceGroup]
) -> tuple[dict[str, ScheduledQuery], list[str]]:
    if path is None:
        return {}, []
    try:
        data = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    return parse_schedules(data, registry, groups, str(path))
