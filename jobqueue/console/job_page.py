"""A job's page: its timeline of attempts, performance summary card, request, the first result rows, the download,
cancel through a confirmation, and its consumer log lines where this process can read them. The part that changes
(`_job_live.html`) is also what the live stream (`jobqueue.console.live`) sends when the job changes.

Every route reads through the API's own `visible_job` and policy, so a page shows what the API would: a job the
signed-in identity may not read is "not found" (404), as in the API."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from jobqueue import job_logs
from jobqueue.api import jobs as api_jobs
from jobqueue.api.deps import ApiError, Services, audit, may, services
from jobqueue.api.jobs import visible_job
from jobqueue.auth.policy import Action
from jobqueue.console import views
from jobqueue.console.preview import Preview, read_preview
from jobqueue.console.sessions import Session
from jobqueue.console.web import PageError, SignedIn, form_fields, redirect, render, require_csrf, templates
from jobqueue.errors import JobStateError
from jobqueue.logs import get_logger
from jobqueue.models import JobRecord, JobStatus

router = APIRouter(include_in_schema=False)
log = get_logger("jobqueue.console")
PREVIEW_ROWS = 50
LOG_LINES = 200  # the last lines of a job shown on its page
LIVE_PART = "_job_live.html"


async def visible(session: Session, job_id: str, action: Action, svc: Services) -> JobRecord:
    try:
        return await visible_job(session.identity, job_id, action, svc)
    except ApiError as e:
        raise PageError(e.status, e.detail) from None


async def _preview(svc: Services, record: JobRecord) -> Preview | str | None:
    """The first result rows of a succeeded job, or why there are none (text), or None (no result yet)."""
    if record.status is not JobStatus.SUCCEEDED or not record.result_uri:
        return None
    try:
        return await asyncio.to_thread(read_preview, svc.client.storage, record.result_uri, PREVIEW_ROWS)
    except FileNotFoundError:
        return (f"the result is gone: results are kept for JOBQUEUE_RESULT_TTL_SECONDS ({svc.settings.result_ttl} s) "
                "after their job finished")
    except OSError as e:  # the store cannot be reached from here: the page still shows the rest
        log.warning("console: cannot read the result preview", job_id=record.job_id, error=str(e))
        return f"the result cannot be read now: {e}"


async def live_context(svc: Services, session: Session, record: JobRecord) -> dict[str, Any]:
    """What `_job_live.html` shows of `record` for this session."""
    now = datetime.now(UTC)
    summary = record.summary
    return {
        "job": record, "summary": summary, "wait": views.wait_seconds(record, now),
        "ran": views.run_seconds(record, now), "stages": views.stages(summary),
        "timeline": views.timeline(record, now), "attempts": views.attempts(record, now),
        "memory_share": views.share(summary.peak_memory_bytes, summary.memory_limit_bytes) if summary else 0.0,
        "cache_share": views.share(summary.bytes_from_cache, summary.bytes_from_cache + summary.bytes_from_remote)
        if summary else 0.0,
        "can_cancel": not record.status.is_final and may(session.identity, Action.CANCEL_JOB, record, svc),
        "has_result": record.status is JobStatus.SUCCEEDED and bool(record.result_uri),
        "preview": await _preview(svc, record),
        "shards": await svc.client.store.shard_records(record) if record.shard_ids else [],
    }


def render_live(context: dict[str, Any]) -> str:
    return templates.get_template(LIVE_PART).render(**context)


def _log_lines(svc: Services, job_id: str) -> list[str] | None:
    """The job's last consumer log lines from this machine's `jobqueue up` consumers; None: not reachable here."""
    home = svc.settings.home
    if not job_logs.reachable(home):
        return None
    return [job_logs.log_line(e) for e in job_logs.job_log_entries(job_logs.log_dir(home), job_id, LOG_LINES)]


@router.get("/jobs/{job_id}")
async def job_page(request: Request, job_id: str, session: SignedIn) -> Response:
    svc = await services(request)
    record = await visible(session, job_id, Action.READ_JOB, svc)
    context = await live_context(svc, session, record)
    logs = await asyncio.to_thread(_log_lines, svc, record.job_id)
    return render(request, "job.html", session, **context, logs=logs, live_src=f"/live/jobs/{record.job_id}")


@router.get("/jobs/{job_id}/result")
async def result_download(request: Request, job_id: str, session: SignedIn) -> Response:
    """The result as a Parquet download: the API's own `get_result`, for the signed-in identity."""
    try:
        return await api_jobs.get_result(job_id, session.identity, await services(request))
    except ApiError as e:
        raise PageError(e.status, e.detail) from None


@router.get("/jobs/{job_id}/cancel")
async def confirm_cancel(request: Request, job_id: str, session: SignedIn) -> Response:
    record = await visible(session, job_id, Action.CANCEL_JOB, await services(request))
    return render(request, "cancel.html", session, job=record)


@router.post("/jobs/{job_id}/cancel")
async def cancel(request: Request, job_id: str, session: SignedIn) -> Response:
    require_csrf(session, await form_fields(request))
    svc = await services(request)
    identity = session.identity
    record = await visible(session, job_id, Action.CANCEL_JOB, svc)
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
