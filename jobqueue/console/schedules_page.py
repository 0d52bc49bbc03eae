"""The schedules page: each schedule the manager publishes with its cron, next and last run, the last run's job
and outcome, and whether it is paused; run now, pause and resume for an operator or admin (forms carrying the
session's CSRF token, through the same `DirectBackend.schedule_action` as `POST /v1/schedules/{name}/{action}`).
A `user` reads the page without the buttons, and a POST of theirs is refused (403) as the API refuses it."""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Annotated, Literal, cast

from fastapi import APIRouter, Path, Query, Request
from starlette.responses import Response

from jobqueue.api.deps import audit, services
from jobqueue.api.wire import ScheduleInfo
from jobqueue.auth.policy import Action
from jobqueue.console.access import can, require
from jobqueue.console.web import PageError, SignedIn, form_fields, here, redirect, render, require_csrf
from jobqueue.direct_backend import DirectBackend
from jobqueue.keys import JobField
from jobqueue.schedule_control import UnknownScheduleError

router = APIRouter(include_in_schema=False)
REFRESH_SECONDS = 5
ScheduleName = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_-]{0,99}$")]
Verb = Literal["run", "pause", "resume"]
DONE = {"run": "will run at the manager's next tick", "pause": "is paused", "resume": "is resumed"}


@dataclass(frozen=True)
class ScheduleRow:
    schedule: ScheduleInfo
    outcome: str | None  # the last run's job state; None: no run yet, or its record has expired


@router.get("/schedules")
async def schedules_page(request: Request, session: SignedIn,
                         did: Annotated[Verb | None, Query()] = None,
                         name: Annotated[str | None, Query(max_length=100)] = None) -> Response:
    svc = await services(request)
    require(session.identity, Action.READ_SCHEDULES, svc)
    client = svc.client
    listing = await DirectBackend(client).schedules()
    with client.reaching_redis("the schedules' last runs are unknown"):
        async with client.redis.pipeline(transaction=False) as pipe:
            for s in listing.schedules:
                if s.last_job:
                    pipe.hget(client.keys.job(s.last_job), JobField.STATUS.value)
            states = iter(await cast(Awaitable[list[bytes | None]], pipe.execute()))
    rows = [ScheduleRow(s, (lambda raw: raw.decode() if raw else None)(next(states)) if s.last_job else None)
            for s in listing.schedules]
    notice = f"Schedule {name} {DONE[did]}." if did and name else None
    return render(request, "schedules.html", session, rows=rows, errors=listing.errors, notice=notice,
                  can_manage=can(session.identity, Action.MANAGE_SCHEDULES, svc), refresh=REFRESH_SECONDS,
                  live_url=here(request).split("?")[0])


@router.post("/schedules/{name}/{verb}")
async def schedule_action(request: Request, name: ScheduleName, verb: Verb, session: SignedIn) -> Response:
    svc = await services(request)
    identity = session.identity
    require(identity, Action.MANAGE_SCHEDULES, svc)
    require_csrf(session, await form_fields(request))
    try:
        await DirectBackend(svc.client).schedule_action(name, verb)
    except UnknownScheduleError as e:
        raise PageError(404, str(e)) from None
    audit(identity, Action.MANAGE_SCHEDULES, schedule=name, schedule_action=verb, via="console")
    return redirect(f"/schedules?did={verb}&name={name}")
