"""The web console: server-rendered pages (Jinja2, with htmx vendored under `static/` for live refresh) that the
API process serves at `/`, in the same process and with the same authentication and policy as `/v1`.

Role: a browser's view of one environment for people: sign in with a token (a session cookie then), the jobs
table, a job's card and performance summary, cancel through a confirmation, the queues and consumers of each
resource group, the schedules (run now, pause, resume), the feature registry; sign-in with OIDC's code flow too.
I/O rule: it reads and writes Redis only through the API's services (the SDK client, `TokenStore`, the job
functions the API routes call) and its own `SessionStore` (`<p>console-session:*`, its one key family); it never
writes job state itself and downloads nothing at run time (htmx is a file of this package). Pages read without
JavaScript; every mutating form is a POST carrying the session's CSRF token.

    mount_console(app)    # in `jobqueue.api.app.create_app`, after the API's routers
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.staticfiles import StaticFiles

from jobqueue.api.deps import ApiError
from jobqueue.console import (
    job_page,
    jobs_list,
    live,
    live_list,
    oidc_signin,
    pages,
    queues,
    registry_page,
    schedules_page,
    signin,
)
from jobqueue.console.web import HERE, PageError, SignInNeeded, optional_session, redirect, render, sign_in_location

__all__ = ["console_error_pages", "mount_console"]


def mount_console(app: FastAPI) -> None:
    """Serve the console's pages and static files on `app`, and answer its errors as pages (not JSON)."""
    app.include_router(signin.router)
    app.include_router(oidc_signin.router)
    app.include_router(jobs_list.router)  # before `pages`: /jobs/bulk-cancel is not a job id
    app.include_router(pages.router)
    app.include_router(job_page.router)
    app.include_router(live_list.router)  # before `live`: /live/jobs is the table's, /live/jobs/{id} a job's
    app.include_router(live.router)
    app.include_router(queues.router)
    app.include_router(schedules_page.router)
    app.include_router(registry_page.router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="console-static")

    @app.exception_handler(SignInNeeded)
    async def sign_in_first(request: Request, e: SignInNeeded) -> Response:
        location = sign_in_location(e.next_path)
        if request.headers.get("HX-Request"):  # a live refresh whose session ended: the whole page goes
            return Response(status_code=204, headers={"HX-Redirect": location})
        return redirect(location)

    @app.exception_handler(PageError)
    async def page_error(request: Request, e: PageError) -> Response:
        return render(request, "error.html", await optional_session(request), status=e.status, message=e.message)


API_PATHS = ("/v1/", "/openapi.json", "/docs", "/redoc", "/healthz", "/readyz", "/metrics")
Handler = Callable[[Request, Exception], Awaitable[Response]]
ApiHandler = Callable[[Request, Any], Response | Awaitable[Response]]


def is_console_path(path: str) -> bool:
    """Whether a path is the console's (answered with HTML pages) rather than the API's (JSON `ErrorBody`)."""
    return not (path == "/v1" or path.startswith(API_PATHS))


def console_error_pages(app: FastAPI) -> None:
    """Errors of console paths as HTML pages (404, 403, 405, 422, ...) instead of the API's JSON, for the error kinds
    both raise; call after the API's own handlers (`add_error_answers`), which still answer every API path."""

    def wrap(api_handler: ApiHandler, status: Callable[[Exception], int],
             message: Callable[[Exception], str]) -> Handler:
        async def handle(request: Request, e: Exception) -> Response:
            if not is_console_path(request.url.path):
                answer = api_handler(request, e)
                return await answer if inspect.isawaitable(answer) else answer
            return render(request, "error.html", await optional_session(request), status=status(e), message=message(e))
        return handle

    def validation(e: Exception) -> str:
        errors = e.errors() if isinstance(e, RequestValidationError) else []
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
        return f"{where}: {first.get('msg', 'invalid')}"

    def http_message(e: Exception) -> str:
        code = e.status_code if isinstance(e, StarletteHTTPException) else 500
        return {404: "there is no such page here", 405: "this page cannot be used that way"}.get(
            code, str(getattr(e, "detail", e)))

    kinds: list[tuple[type[Exception], Callable[[Exception], int], Callable[[Exception], str]]] = [
        (ApiError, lambda e: e.status if isinstance(e, ApiError) else 500, lambda e: str(e)),
        (StarletteHTTPException, lambda e: e.status_code if isinstance(e, StarletteHTTPException) else 500,
         http_message),
        (RequestValidationError, lambda e: 422, validation),
    ]
    for kind, status, message in kinds:
        app.add_exception_handler(kind, wrap(app.exception_handlers[kind], status, message))
