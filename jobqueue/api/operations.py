"""Everything but jobs: groups status (`jobqueue status`), schedules (list; run now, pause, resume for operators),
and the probes and metrics: `/healthz` (the process answers), `/readyz` (Redis answers), `/metrics`."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.responses import Response

from jobqueue.api.deps import ApiError, Caller, Services, Svc, allow, audit
from jobqueue.api.responses import ERRORS
from jobqueue.api.wire import GroupStatus, Health, ScheduleAction, ScheduleInfo, ScheduleList
from jobqueue.auth.identity import Identity
from jobqueue.auth.policy import Action
from jobqueue.group_status import group_rows
from jobqueue.keys import TRUE, ScheduleField
from jobqueue.schedule_control import (
    UnknownScheduleError,
    published_schedules,
    request_run,
    schedule_state,
    set_paused,
)
from jobqueue.schedules import next_due

router = APIRouter(responses=ERRORS)
probes = APIRouter(tags=["probes"])
READY_TIMEOUT = 2.0


@router.get("/v1/groups", response_model=list[GroupStatus], tags=["status"],
            summary="Each resource group's consumers, queue and the manager's last decision.")
async def groups(identity: Caller, svc: Svc) -> list[GroupStatus]:
    allow(identity, Action.READ_STATUS, svc)
    rows = await group_rows(svc.client.redis, svc.client.keys, svc.settings)
    return [GroupStatus.model_validate(r) for r in rows]


_SCHEDULE_LINKS = {"responses": {"200": {"links": {
    f"{verb.capitalize()}Schedule": {"operationId": f"{verb}_schedule",
                                     "parameters": {"name": "$response.body#/schedules/0/name"}}
    for verb in ("run", "pause", "resume")}}}}


@router.get("/v1/schedules", response_model=ScheduleList, tags=["schedules"], openapi_extra=_SCHEDULE_LINKS,
            summary="Every schedule the manager publishes, with its state, next and last run.")
async def schedules(identity: Caller, svc: Svc) -> ScheduleList:
    allow(identity, Action.READ_SCHEDULES, svc)
    redis, keys = svc.client.redis, svc.client.keys
    published = await published_schedules(redis, keys)
    now, out = datetime.now(UTC), []
    for name, sq in sorted(published.definitions.items()):
        state = await schedule_state(redis, keys, name)
        out.append(ScheduleInfo(
            name=name, schedule=sq.schedule, timezone=sq.timezone, resource_group=sq.resource_group,
            enabled=sq.enabled, paused=state.get(ScheduleField.PAUSED) == TRUE, next_due=next_due(sq, now),
            last_job=state.get(ScheduleField.LAST_JOB), last_due=state.get(ScheduleField.LAST_DUE),
            last_reason=state.get(ScheduleField.LAST_REASON), definition=sq.model_dump(mode="json")))
    return ScheduleList(schedules=out, errors=published.errors)


async def _act(name: str, action: str, identity: Identity, svc: Services) -> ScheduleAction:
    allow(identity, Action.MANAGE_SCHEDULES, svc)
    redis, keys = svc.client.redis, svc.client.keys
    try:
        if action == "run":
            await request_run(redis, keys, name)
        else:
            await set_paused(redis, keys, name, paused=action == "pause")
    except UnknownScheduleError as e:
        raise ApiError(404, str(e)) from None
    audit(identity, Action.MANAGE_SCHEDULES, schedule=name, schedule_action=action)
    detail = {"run": "the manager submits a run at its next tick", "pause": "no runs until resumed",
              "resume": "runs again from the next due time"}[action]
    return ScheduleAction(name=name, action=action, detail=detail)


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
