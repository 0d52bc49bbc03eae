"""Everything but jobs: groups status (`jobqueue status`), schedules (list, runs; run now, pause, resume for
operators),
and the probes and metrics: `/healthz` (the process answers), `/readyz` (Redis answers), `/metrics`."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.responses import Response

from jobqueue.api.deps import ApiError, Caller, Services, Svc, allow, audit
from jobqueue.api.responses import ERRORS
from jobqueue.api.wire import MAX_SCHEDULE_RUNS, GroupStatus, Health, ScheduleAction, ScheduleList, ScheduleRuns
from jobqueue.auth.identity import Identity
from jobqueue.auth.policy import Action
from jobqueue.direct_backend import DirectBackend
from jobqueue.schedule_control import UnknownScheduleError

router = APIRouter(responses=ERRORS)
probes = APIRouter(tags=["probes"])
READY_TIMEOUT = 2.0


@router.get("/v1/groups", response_model=list[GroupStatus], tags=["status"],
            summary="Each resource group's consumers, queue and the manager's last decision.")
async def groups(identity: Caller, svc: Svc) -> list[GroupStatus]:
    allow(identity, Action.READ_STATUS, svc)
    return await DirectBackend(svc.client).groups()


_SCHEDULE_LINKS = {"responses": {"200": {"links": {
    link: {"operationId": operation, "parameters": {"name": "$response.body#/schedules/0/name"}}
    for link, operation in (("RunSchedule", "run_schedule"), ("PauseSchedule", "pause_schedule"),
                            ("ResumeSchedule", "resume_schedule"), ("RunsOfSchedule", "runs_of_schedule"))}}}}


@router.get("/v1/schedules", response_model=ScheduleList, tags=["schedules"], openapi_extra=_SCHEDULE_LINKS,
            summary="Every schedule the manager publishes, with its state, next and last run.")
async def schedules(identity: Caller, svc: Svc) -> ScheduleList:
    allow(identity, Action.READ_SCHEDULES, svc)
    return await DirectBackend(svc.client).schedules()


async def _act(name: str, action: str, identity: Identity, svc: Services) -> ScheduleAction:
    allow(identity, Action.MANAGE_SCHEDULES, svc)
    try:
        done = await DirectBackend(svc.client).schedule_action(name, action)
    except UnknownScheduleError as e:
        raise ApiError(404, str(e)) from None
    audit(identity, Action.MANAGE_SCHEDULES, schedule=name, schedule_action=action)
    return done


@router.get("/v1/schedules/{name}/runs", response_model=ScheduleRuns, tags=["schedules"],
            summary="The last runs of a schedule, newest first: status, duration, spilled bytes.")
async def runs_of_schedule(name: str, identity: Caller, svc: Svc,
                           limit: int = Query(10, ge=1, le=MAX_SCHEDULE_RUNS)) -> ScheduleRuns:
    allow(identity, Action.READ_SCHEDULES, svc)
    try:
        return await DirectBackend(svc.client).schedule_runs(name, limit)
    except UnknownScheduleError as e:
        raise ApiError(404, str(e)) from None


@router.post("/v1/schedules/{name}/run", response_model=ScheduleAction, tags=["schedules"], summary="Run now.")
async def run_schedule(name: str, identity: Caller, svc: Svc) -> ScheduleAction:
    return await _act(name, "run", identity, svc)


@router.post("/v1/schedules/{name}/pause", response_model=ScheduleAction, tags=["schedules"], summary="Pause.")
async def pause_schedule(name: str, identity: Caller, svc: Svc) -> ScheduleAction:
    return await _act(name, "pause", identity, svc)


@router.post("/v1/schedules/{name}/resume", response_model=ScheduleAction, tags=["schedules"], summary="Resume.")
async def resume_schedule(name: str, identity: Caller, svc: Svc) -> ScheduleAction:
    return await _act(name, "resume", identity, svc)


@probes.get("/healthz", response_model=Health, summary="Liveness: the process answers.")
async def healthz() -> Health:
    return Health(status="ok")


@probes.get("/readyz", response_model=Health, responses={503: {"model": Health, "description": "Redis is down."}},
            summary="Readiness: Redis answers.")
async def readyz(svc: Svc) -> Health | JSONResponse:
    try:
        await asyncio.wait_for(svc.client.redis.ping(), READY_TIMEOUT)
    except (RedisConnectionError, RedisTimeoutError, TimeoutError) as e:
        body = Health(status="unavailable", detail=f"cannot reach Redis at {svc.client.server}: {e}")
        return JSONResponse(body.model_dump(), status_code=503)
    return Health(status="ready")


@router.get("/metrics", response_class=Response, tags=["probes"],
            responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}},
                             "description": "Prometheus text format."}},
            summary="Prometheus metrics (per route and per team; an operator token).")
async def metrics(identity: Caller, svc: Svc) -> Response:
    allow(identity, Action.READ_METRICS, svc)
    return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)
