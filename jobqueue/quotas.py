"""Quotas: how many unfinished jobs an owner or a team may have, and how many input rows one job may have. Pure:
no I/O; `JobStore.submit` enforces the queued-jobs quotas atomically, the SDK's `submit_prepared` the rows.

    JOBQUEUE_QUOTA_MAX_QUEUED_PER_OWNER=20      # every owner: at most 20 unfinished jobs (0: no limit)
    JOBQUEUE_QUOTA_MAX_QUEUED_PER_TEAM=200      # every team: at most 200 unfinished jobs
    JOBQUEUE_QUOTA_MAX_INPUT_ROWS=10000000      # any job: at most 10M input rows
    JOBQUEUE_QUOTA_TEAM_OVERRIDES='{"risk": {"max_queued": 500, "max_queued_per_owner": 50}}'

"Queued" counts a job from its submission to its end (succeeded, failed, cancelled, expired): waiting *or*
running. A quota on waiting jobs alone would let one owner hold every consumer of a group while still submitting;
and a count that only moves at submit and at the final transition stays right through retries and requeues.

A team's override replaces, for jobs of that team, each default it names; a value of 0 there means no limit for
that team. Scheduled runs are counted but never refused (an operator configured them; refusing would lose a run).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from jobqueue.errors import QuotaExceededError
from jobqueue.keys import ActiveJobsField

if TYPE_CHECKING:
    from jobqueue.settings import Settings

OVERRIDES_SETTING = "JOBQUEUE_QUOTA_TEAM_OVERRIDES"


class TeamQuota(BaseModel):
    """One team's overrides in JOBQUEUE_QUOTA_TEAM_OVERRIDES: each one given replaces the default for its jobs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_queued: int | None = Field(default=None, ge=0, description="The team's unfinished jobs (0: no limit).")
    max_queued_per_owner: int | None = Field(default=None, ge=0, description="Each owner's, on jobs of the team.")
    max_input_rows: int | None = Field(default=None, ge=0, description="Input rows of one job of the team.")
    max_running: int | None = Field(default=None, ge=0, description="The team's running jobs in each group.")


class QuotaKind(enum.StrEnum):
    QUEUED_PER_OWNER = "max_queued_per_owner"
    QUEUED_PER_TEAM = "max_queued_per_team"
    INPUT_ROWS = "max_input_rows"


_DEFAULT_SETTING = {QuotaKind.QUEUED_PER_OWNER: "JOBQUEUE_QUOTA_MAX_QUEUED_PER_OWNER",
                    QuotaKind.QUEUED_PER_TEAM: "JOBQUEUE_QUOTA_MAX_QUEUED_PER_TEAM",
                    QuotaKind.INPUT_ROWS: "JOBQUEUE_QUOTA_MAX_INPUT_ROWS"}
_OVERRIDE_FIELD = {QuotaKind.QUEUED_PER_OWNER: "max_queued_per_owner", QuotaKind.QUEUED_PER_TEAM: "max_queued",
                   QuotaKind.INPUT_ROWS: "max_input_rows"}


@dataclass(frozen=True)
class Quota:
    """One quota that applies to a submission (a limit of 0 is none, and is never made one)."""

    kind: QuotaKind
    subject: str  # the owner or team whose jobs it counts (input rows: the team, or '' for every job)
    limit: int
    setting: str  # where it is set, to say what to change

    @property
    def active_field(self) -> str:
        """Its field of <p>active-jobs (a queued-jobs quota only)."""
        kind = ActiveJobsField.OWNER if self.kind is QuotaKind.QUEUED_PER_OWNER else ActiveJobsField.TEAM
        return kind.field(self.subject)

    def exceeded(self, current: int) -> QuotaExceededError:
        """The error of a submission that would pass this quota, `current` being the count (or rows) it found."""
        if self.kind is QuotaKind.INPUT_ROWS:
            whose = f" of team {self.subject}" if self.subject else ""
            text = (f"quota {self.kind.value}{whose} exceeded: the input has {current} rows, the limit is {self.limit} "
                    f"({self.setting}); split the input into several queries, or ask an operator to raise the quota")
        else:
            who = "owner" if self.kind is QuotaKind.QUEUED_PER_OWNER else "team"
            text = (f"quota {self.kind.value} exceeded: {who} {self.subject} has {current} unfinished (queued or "
                    f"running) jobs, the limit is {self.limit} ({self.setting}); wait for some to finish or cancel "
                    f"some (`jobqueue jobs --{who} {self.subject} --state queued`), or ask an operator to raise the "
                    "quota")
        return QuotaExceededError(text + "; nothing was submitted", quota=self.kind.value, subject=self.subject,
                                  limit=self.limit, current=current)


def quotas_for(settings: Settings, owner: str | None, team: str | None) -> list[Quota]:
    """The quotas that apply to a job of `owner` and `team` (only those with a limit)."""
    override = settings.quota_team_overrides.get(team) if team else None
    defaults = {QuotaKind.QUEUED_PER_OWNER: settings.quota_max_queued_per_owner,
                QuotaKind.QUEUED_PER_TEAM: settings.quota_max_queued_per_team,
                QuotaKind.INPUT_ROWS: settings.quota_max_input_rows}
    subjects = {QuotaKind.QUEUED_PER_OWNER: owner, QuotaKind.QUEUED_PER_TEAM: team, QuotaKind.INPUT_ROWS: team or ""}
    quotas = []
    for kind, default in defaults.items():
        subject = subjects[kind]
        if subject is None:
            continue
        limit, setting = default, _DEFAULT_SETTING[kind]
        overridden = getattr(override, _OVERRIDE_FIELD[kind]) if override is not None else None
        if overridden is not None:
            limit, setting = overridden, f'{OVERRIDES_SETTING}["{team}"].{_OVERRIDE_FIELD[kind]}'
        if limit > 0:
            quotas.append(Quota(kind, subject, limit, setting))
    return quotas


def check_input_rows(quotas: list[Quota], rows: int) -> None:
    """`QuotaExceededError` when the input has more rows than its quota allows."""
    for quota in quotas:
        if quota.kind is QuotaKind.INPUT_ROWS and rows > quota.limit:
            raise quota.exceeded(rows)


def queued_quotas(quotas: list[Quota]) -> list[Quota]:
    return [q for q in quotas if q.kind is not QuotaKind.INPUT_ROWS]
