"""Who is calling, what they may do, and the audit line: the request-scoped dependencies of every route.

    identity = Depends(caller)                          # 401 naming why a token is refused
    allow(identity, Action.CANCEL_JOB, record, svc)     # 403, or 404 when the caller may not learn the job exists
    audit(identity, Action.CANCEL_JOB, job_id=..., outcome=...)  # one structured line per mutating call
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CollectorRegistry, Counter

from jobqueue.auth.identity import Identity
from jobqueue.auth.oidc import BearerAuthenticator, Refusal
from jobqueue.auth.policy import AccessRules, Action, Decision, authorize
from jobqueue.auth.token_cache import VerifiedTokens
from jobqueue.auth.tokens import TokenStore
from jobqueue.client import AsyncJobQueueClient
from jobqueue.logs import get_logger
from jobqueue.models import JobRecord
from jobqueue.presign import Presigner
from jobqueue.settings import Settings

audit_log = get_logger("jobqueue.api.audit")
OTHER_TEAM = "_other"  # the label of teams past JOBQUEUE_METRICS_MAX_TEAMS, as the manager's counters


class ApiError(Exception):
    """An answer other than success: its status, the `ErrorBody` fields and headers."""

    def __init__(self, status: int, detail: str, *, field: str | None = None, reason: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.field, self.reason = status, detail, field, reason
        self.headers = headers or {}


class ApiMetrics:
    """The API's Prometheus metrics: per route template and per team only, never per job or per user."""

    def __init__(self, max_teams: int) -> None:
        self.registry = CollectorRegistry()
        self.max_teams = max_teams
        self._teams: set[str] = set()
        self.requests = Counter("jobqueue_api_requests", "API requests by route template, method and status code.",
                                ["method", "route", "code"], registry=self.registry)
        self.submitted = Counter("jobqueue_api_jobs_submitted", "Jobs submitted through the API, by team "
                                 f"(teams past the first JOBQUEUE_METRICS_MAX_TEAMS are {OTHER_TEAM!r}).",
                                 ["team"], registry=self.registry)
        self.cancelled = Counter("jobqueue_api_jobs_cancelled", "Jobs cancelled through the API, by the caller's "
                                 "team.", ["team"], registry=self.registry)

    def team(self, team: str | None) -> str:
        name = team or "_none"
        if name in self._teams:
            return name
        if len(self._teams) < self.max_teams:
            self._teams.add(name)
            return name
        return OTHER_TEAM


@dataclass
class Services:
    """What every request uses, made once per process by the lifespan: holds connections, no request state."""

    settings: Settings
    client: AsyncJobQueueClient
    tokens: TokenStore
    metrics: ApiMetrics
    auth: BearerAuthenticator | VerifiedTokens  # `jq_` tokens through `tokens` (verified ones kept for
    # JOBQUEUE_API_TOKEN_CACHE_SECONDS), JWTs of the OIDC issuer when one is set

    @property
    def rules(self) -> AccessRules:
        return AccessRules(users_see_team_jobs=self.settings.users_see_team_jobs)

    @cached_property
    def presigner(self) -> Presigner:  # presigned S3 URLs (jobqueue.api.uploads); botocore is loaded at first use
        return Presigner(self.settings)


async def services(request: Request) -> Services:
    """The process's `Services`: the API's routes take it as a dependency (`Svc`), the console's await it. Async,
    since FastAPI runs a plain `def` dependency in its thread pool (a thread hop on every request)."""
    svc = request.app.state.services
    assert isinstance(svc, Services)
    return svc


_bearer = HTTPBearer(auto_error=False, description="An API token from `jobqueue tokens create`.")
Svc = Annotated[Services, Depends(services)]


async def caller(svc: Svc, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Identity:
    """The identity of the bearer token; 401 saying why there is none (missing, unknown, expired, revoked)."""
    token = credentials.credentials if credentials is not None else None
    found = await svc.auth.verify(token)
    if isinstance(found, Refusal):
        reason = found.reason.value
        error = "" if reason == "missing" else ' error="invalid_token",'
        raise ApiError(found.status, found.message, reason=reason,
                       headers={"WWW-Authenticate": f'Bearer realm="jobqueue",{error} error_description="{reason}"'})
    return found


Caller = Annotated[Identity, Depends(caller)]


def allow(identity: Identity, action: Action, svc: Services, record: JobRecord | None = None) -> Decision:
    """The policy's decision, or the error answer: 404 when the caller may not learn that the job exists."""
    decision = authorize(identity, action, record.owner if record else None, record.team if record else None,
                         svc.rules)
    if decision.allowed:
        return decision
    if decision.conceal and record is not None:
        raise ApiError(404, not_found(record.job_id, svc))
    raise ApiError(403, decision.reason, reason="forbidden")


def may(identity: Identity, action: Action, record: JobRecord, svc: Services) -> bool:
    return authorize(identity, action, record.owner, record.team, svc.rules).allowed


def not_found(job_id: str, svc: Services) -> str:
    return f"no job {job_id!r} in environment {svc.settings.environment!r}"


def audit(identity: Identity, action: Action, **what: Any) -> None:
    """One structured line per mutating call: who, what, which job (or how many)."""
    audit_log.info("api audit", actor=identity.owner, actor_team=identity.team, role=identity.role.value,
                   token_id=identity.token_id, action=action.value, **what)
