"""The console's pages: the jobs table (filters, cursor pages), a job's card with its performance summary, cancel
through a confirmation, and the resource groups (`jobqueue status`). Every page reads through the API's own
functions and policy (`visible_job`, `find_jobs`, `may`, `DirectBackend`), so a page shows what the API would."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from jobqueue.api import jobs as api_jobs
from jobqueue.api.deps import ApiError, Services, allow, audit, may, services
from jobqueue.api.jobs import visible_job
from jobqueue.api.listing import CURSOR_PATTERN
from jobqueue.auth.policy import Action
from jobqueue.console import views
from jobqueue.console.sessions import Session
from jobqueue.console.web import PageError, SignedIn, form_fields, here, redirect, render, require_csrf
from jobqueue.direct_backend import DirectBackend
from jobqueue.errors import JobStateError
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


@router.get("/jobs/{job_id}")
async def job_page(request: Request, job_id: str, session: SignedIn) -> Response:
    svc = services(request)
    record = await _visible(session, job_id, Action.READ_JOB, svc)
    now = datetime.now(UTC)
    return render(request, "job.html", session, job=record, summary=record.summary,
                  wait=views.wait_seconds(record, now), ran=views.run_seconds(record, now),
                  stages=views.stages(record.summary), live_url=here(request),
                  can_cancel=not record.status.is_final and may(session.identity, Action.CANCEL_JOB, record, svc),
                  has_result=record.status is JobStatus.SUCCEEDED and bool(record.result_uri))


@router.get("/jobs/{job_id}/result")
async def result_download(request: Request, job_id: str, session: SignedIn) -> Response:
    """The result as a Parquet download: the API's own `get_result`, for the signed-in identity."""
    try:
        return await api_jobs.get_result(job_id, session.identity, services(request))
    except ApiError as e:
        raise PageError(e.status, e.detail) from None


@router.get("/jobs/{job_id}/cancel")
async def confirm_cancel(request: Request, job_id: str, session: SignedIn) -> Response:
    record = await _visible(session, job_id, Action.CANCEL_JOB, services(request))
    return render(request, "cancel.html", session, job=record)


@router.post("/jobs/{job_id}/cancel")
async def cancel(request: Request, job_id: str, session: SignedIn) -> Response:
    require_csrf(session, await form_fields(request))
    svc = services(request)
    identity = session.identity
    record = await _visible(session, job_id, Action.CANCEL_JOB, svc)
    try:
        done = await svc.client.cancel(record.job_id)
    except JobStateError as e:
        audit(identity, Action.CANCEL_JOB, job_id=record.job_id, outcome="refused", status=record.status.value,
              via="console")
        raise PageError(409, str(e)) from None
    svc.metrics.cancelled.labels(svc.metrics.team(identity.team)).inc()
    audit(identity, Action.CANCEL_JOB, job_id=record.job_id, outcome=done.status.value, job_owner=record.owner,
          via="console")
    return redirect(f"/jobs/{record.job_id}")


@router.get("/groups")
async def groups_page(request: Request, session: SignedIn) -> Response:
    svc = services(request)
    allow(session.identity, Action.READ_STATUS, svc)
    return render(request, "groups.html", session, groups=await DirectBackend(svc.client).groups(),
                  live_url=here(request))
