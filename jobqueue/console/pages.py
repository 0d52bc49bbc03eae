"""The console's jobs table (filters, cursor pages); a job's page is `jobqueue.console.job_page`, and the queues,
schedules and registry have their own modules. Every page reads through the API's own
functions and policy (`visible_job`, `find_jobs`, `may`, `DirectBackend`), so a page shows what the API would."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from jobqueue.api.deps import ApiError, Services, allow, may, services
from jobqueue.api.jobs import visible_job
from jobqueue.api.listing import CURSOR_PATTERN, find_jobs
from jobqueue.auth.identity import Role
from jobqueue.auth.policy import Action
from jobqueue.console import views
from jobqueue.console.sessions import Session
from jobqueue.console.web import PageError, SignedIn, here, redirect, render
from jobqueue.job_filter import JobFilter
from jobqueue.models import JobRecord, JobStatus

router = APIRouter(include_in_schema=False)
PAGE_SIZE = 50
FILTERS = ("owner", "team", "state", "resource_group", "query_name")
Text = Annotated[str | None, Query(max_length=200)]
Cursor = Annotated[str | None, Query(pattern=CURSOR_PATTERN)]


async def _visible(session: Session, job_id: str, action: Action, svc: Services) -> JobRecord:
    try:
        return await visible_job(session.identity, job_id, action, svc)
    except ApiError as e:
        raise PageError(e.status, e.detail) from None


@router.get("/")
async def home() -> Response:
    return redirect("/jobs")


@router.get("/jobs")
async def jobs_page(request: Request, session: SignedIn, owner: Text = None, team: Text = None, state: Text = None,
                    resource_group: Text = None, query_name: Text = None, cursor: Cursor = None) -> Response:
    svc = services(request)
    identity = session.identity
    allow(identity, Action.LIST_JOBS, svc)
    given = {"owner": owner, "team": team, "state": state, "resource_group": resource_group,
             "query_name": query_name}
    chosen = {name: value.strip() for name, value in given.items() if value and value.strip()}
    try:
        status = JobStatus(chosen["state"]) if "state" in chosen else None
    except ValueError:
        raise PageError(400, f"state {chosen['state']!r} is not one of "
                        f"{', '.join(s.value for s in JobStatus)}") from None
    wanted = JobFilter(group=chosen.get("resource_group"), state=status, owner=chosen.get("owner"),
                       team=chosen.get("team"), query_name=chosen.get("query_name"), tags={})
    client = svc.client
    records, next_cursor = await find_jobs(
        client.store, client.redis, client.keys,
        lambda r: wanted.matches(r) and may(identity, Action.READ_JOB, r, svc),
        PAGE_SIZE, cursor, None, None, svc.settings.api_list_scan_limit)
    now = datetime.now(UTC)
    rows = [(r, views.wait_seconds(r, now), views.run_seconds(r, now)) for r in records]
    next_url = "/jobs?" + urlencode({**chosen, "cursor": next_cursor}) if next_cursor else None
    first_url = "/jobs?" + urlencode(chosen) if cursor else None
    return render(request, "jobs.html", session, rows=rows, chosen=chosen, states=list(JobStatus),
                  next_url=next_url, first_url=first_url, live_url=here(request), filtered=bool(chosen),
                  sees_everyone=identity.role is not Role.USER)


