"""`create_app(settings)`: the FastAPI application, its lifespan and its error answers (all `ErrorBody`)."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobqueue.api import jobs, operations, registry, submit, uploads
from jobqueue.api.deps import ApiError, ApiMetrics, Services
from jobqueue.api.timing import ServerTiming
from jobqueue.api.wire import ErrorBody, QuotaHit
from jobqueue.auth.oidc import BearerAuthenticator
from jobqueue.auth.token_cache import VerifiedTokens
from jobqueue.auth.tokens import TokenStore
from jobqueue.client import AsyncJobQueueClient
from jobqueue.console import console_error_pages, mount_console
from jobqueue.errors import InvalidQueryError, JobStateError, QuotaExceededError, RedisUnavailableError
from jobqueue.logs import get_logger
from jobqueue.settings import Settings

log = get_logger("jobqueue.api")


def _error(status: int, body: ErrorBody, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def _field(loc: tuple[int | str, ...]) -> str:
    """A validation error's location as the name of the field (`max_retries`, `tag[1]`), without `query`/`body`."""
    parts = [str(p) for p in loc[1:]] if len(loc) > 1 and loc[0] in ("query", "path", "header", "body") else \
        [str(p) for p in loc]
    return ".".join(parts) or "request"


def _operation_id(route: APIRoute) -> str:
    return route.name  # the function's name: `submit`, `get_job` (what OpenAPI links and clients name)


async def known_parameters(request: Request) -> None:
    """A query parameter the route does not take is refused (422 naming it), not ignored: a mistyped filter
    (`ownr=alice`) must not list or cancel everything, and a client cannot pass what is not its to set (`owner`)."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    declared = {p.alias for p in route.dependant.query_params}  # every route declares its own (none in deps)
    for name in request.query_params:
        if name not in declared:
            takes = ", ".join(sorted(declared)) or "none"
            raise InvalidQueryError(name, f"is not a parameter of {request.method} {route.path}; its parameters: "
                                    f"{takes}")


class CountRequests:
    """`jobqueue_api_requests` by method, route template and status: a plain ASGI middleware (Starlette's
    `BaseHTTPMiddleware` runs every request through an extra task and memory streams)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = [0]

        async def send_noting_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        await self.app(scope, receive, send_noting_status)
        services = getattr(scope["app"].state, "services", None)
        if services is not None and status[0]:
            template = getattr(scope.get("route"), "path", "unmatched")
            services.metrics.requests.labels(scope["method"], template, str(status[0])).inc()


def settle_heap() -> None:
    """Everything made so far (modules, the app, its schemas, the lifespan's clients and registry: most of the heap,
    alive as long as the process) moved out of the garbage collector's reach. A full collection otherwise walks all
    of it while every request in flight waits (tens of milliseconds: the p99 of a busy API process), to find garbage
    only among what requests made."""
    gc.collect()
    gc.freeze()


def create_app(settings: Settings, *, own_process: bool = False) -> FastAPI:
    """The API of one environment. The SDK client it submits with records no server-side team: the team of a job
    is always its token's. `own_process`: the process serves only this app (`jobqueue api`), whose heap is settled
    once it has started (`settle_heap`); not where it shares a process (`jobqueue up`, tests), whose objects frozen
    would never be collected."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # always direct (never the HTTP mode a JOBQUEUE_API_URL or a local `up`'s api.url would give a client)
        client = AsyncJobQueueClient(settings.model_copy(update={"team": ""}), direct=True)
        client.lookups.seconds = settings.api_cache_seconds
        tokens = TokenStore(client.redis, client.keys)
        app.state.services = Services(settings, client, tokens, ApiMetrics(settings.metrics_max_teams),
                                      VerifiedTokens(BearerAuthenticator.from_settings(settings, tokens),
                                                     settings.api_token_cache_seconds))
        log.info("api started", environment=settings.environment)
        if own_process:
            settle_heap()
        try:
            yield
        finally:
            await client.aclose()

    app = FastAPI(title="jobqueue", version="1", lifespan=lifespan, generate_unique_id_function=_operation_id,
                  dependencies=[Depends(known_parameters)],
                  description="Offline feature queries: submit, follow, cancel, download. Every `/v1` call needs "
                  "`Authorization: Bearer <token>` (`jobqueue tokens create`).")
    app.include_router(submit.router)
    app.include_router(jobs.router)
    app.include_router(uploads.uploads)
    app.include_router(uploads.results)
    app.include_router(operations.router)
    app.include_router(registry.router)
    app.include_router(operations.probes)
    mount_console(app)  # the web console at `/` (jobqueue.console)

    add_error_answers(app)
    console_error_pages(app)  # ... but as HTML pages on the console's paths

    app.add_middleware(CountRequests)
    app.add_middleware(ServerTiming)  # outermost: the whole of the app's time
    return app


def add_error_answers(app: FastAPI) -> None:
    """Every error as an `ErrorBody`, with the status the SDK maps back to its own exception."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError) -> Response:
        return _error(e.status, ErrorBody(detail=e.detail, field=e.field, reason=e.reason), e.headers)

    @app.exception_handler(InvalidQueryError)
    async def invalid_query(request: Request, e: InvalidQueryError) -> Response:
        return _error(422, ErrorBody(detail=str(e), field=e.field, reason="invalid"))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, e: RequestValidationError) -> Response:
        first = e.errors()[0] if e.errors() else {"loc": (), "msg": "invalid request"}
        field = _field(tuple(first.get("loc", ())))
        return _error(422, ErrorBody(detail=f"{field}: {first.get('msg', 'invalid')}", field=field,
                                     reason="invalid"))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> Response:
        headers = dict(e.headers or {})
        if e.status_code == 405:  # Allow: the methods of every route of this path, not only of the first one
            methods = {m for r in app.router.routes if isinstance(r, Route | APIRoute)
                       and r.matches(request.scope)[0] is not Match.NONE for m in (r.methods or ())}
            headers["Allow"] = ", ".join(sorted(methods))
        return _error(e.status_code, ErrorBody(detail=str(e.detail)), headers)

    @app.exception_handler(QuotaExceededError)
    async def over_quota(request: Request, e: QuotaExceededError) -> Response:
        hit = QuotaHit(quota=e.quota, subject=e.subject, limit=e.limit, current=e.current)
        return _error(429, ErrorBody(detail=str(e), reason="quota", quota=hit))

    @app.exception_handler(JobStateError)
    async def job_state(request: Request, e: JobStateError) -> Response:
        return _error(409, ErrorBody(detail=str(e), reason="job_state"))

    async def unreachable(request: Request, e: Exception) -> Response:
        log.warning("api: redis unreachable", error=str(e), path=request.url.path)
        return _error(503, ErrorBody(detail=f"the service cannot reach Redis now: {e}", reason="unavailable"))

    kinds: tuple[type[Exception], ...] = (RedisUnavailableError, RedisConnectionError, RedisTimeoutError)
    for kind in kinds:
        app.add_exception_handler(kind, unreachable)
