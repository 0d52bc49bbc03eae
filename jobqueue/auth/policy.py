"""Who may do what: the authorization policy of the API. Pure: no I/O, no clock, no settings read.

    decision = authorize(identity, Action.CANCEL_JOB, job_owner=record.owner, job_team=record.team,
                         rules=AccessRules(users_see_team_jobs=settings.users_see_team_jobs))
    if not decision.allowed:
        ... 404 when decision.conceal (the caller may not know the job exists), else 403 with decision.reason

A listing shows a `user` only the jobs `authorize(identity, Action.READ_JOB, r.owner, r.team)` allows.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from jobqueue.auth.identity import Identity, Role


class Action(enum.StrEnum):
    SUBMIT_JOB = "jobs:submit"
    LIST_JOBS = "jobs:list"  # every role; what a listing shows is narrowed per job (READ_JOB)
    READ_JOB = "jobs:read"  # a job's record, summary and attempts
    READ_RESULT = "jobs:result"
    CANCEL_JOB = "jobs:cancel"
    CANCEL_MANY = "jobs:cancel-many"  # cancel by filter: every matching job is checked with CANCEL_JOB too
    READ_STATUS = "status:read"  # queues, groups, health
    READ_METRICS = "metrics:read"
    READ_SCHEDULES = "schedules:read"
    MANAGE_SCHEDULES = "schedules:manage"  # run now, pause, resume
    READ_REGISTRY = "registry:read"
    APPLY_REGISTRY = "registry:apply"
    MANAGE_TOKENS = "tokens:manage"  # create, list, revoke


# actions on one job: the job's owner and team decide for a `user`
JOB_ACTIONS = frozenset({Action.READ_JOB, Action.READ_RESULT, Action.CANCEL_JOB})
# the least role of every other action
LEAST_ROLE: dict[Action, Role] = {
    Action.SUBMIT_JOB: Role.USER,
    Action.LIST_JOBS: Role.USER,
    Action.CANCEL_MANY: Role.USER,
    Action.READ_STATUS: Role.USER,
    Action.READ_SCHEDULES: Role.USER,
    Action.READ_REGISTRY: Role.USER,
    Action.READ_METRICS: Role.OPERATOR,
    Action.MANAGE_SCHEDULES: Role.OPERATOR,
    Action.APPLY_REGISTRY: Role.ADMIN,
    Action.MANAGE_TOKENS: Role.ADMIN,
}
assert set(LEAST_ROLE) | JOB_ACTIONS == set(Action) and not set(LEAST_ROLE) & JOB_ACTIONS


@dataclass(frozen=True)
class AccessRules:
    """The configurable part of the policy (from settings)."""

    users_see_team_jobs: bool = False  # JOBQUEUE_USERS_SEE_TEAM_JOBS


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    conceal: bool = False  # denied, and the caller may not learn that the job exists: answer "not found"


def authorize(identity: Identity, action: Action, job_owner: str | None = None, job_team: str | None = None,
              rules: AccessRules = AccessRules()) -> Decision:
    """Whether `identity` may do `action`; for an action on one job (`JOB_ACTIONS`), on the job of `job_owner` and
    `job_team` (None: the job has none, as jobs submitted before attribution)."""
    role = identity.role
    if action in JOB_ACTIONS:
        if role.rank >= Role.OPERATOR.rank:
            return Decision(True, f"role {role.value} may {action.value} any job")
        if job_owner is not None and job_owner == identity.owner:
            return Decision(True, f"{identity.owner} owns the job")
        if rules.users_see_team_jobs and identity.team and job_team == identity.team:
            return Decision(True, f"the job is of {identity.owner}'s team {identity.team}")
        whose = "its own jobs" + (" and its team's" if rules.users_see_team_jobs and identity.team else "")
        return Decision(False, f"role user may {action.value} only {whose}", conceal=True)
    least = LEAST_ROLE[action]
    if role.rank >= least.rank:
        return Decision(True, f"role {role.value} may {action.value}")
    return Decision(False, f"{action.value} needs role {least.value} or higher; this token's role is {role.value}")
