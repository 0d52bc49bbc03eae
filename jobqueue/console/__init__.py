"""The web console: server-rendered pages (Jinja2, with htmx vendored under `static/` for live refresh) that the
API process serves at `/`, in the same process and with the same authentication and policy as `/v1`.

Role: a browser's view of one environment for people: sign in with a token (a session cookie then), the jobs
table, a job's card and performance summary, cancel through a confirmation, the resource groups.
I/O rule: it reads and writes Redis only through the API's services (the SDK client, `TokenStore`, the job
functions the API routes call) and its own `SessionStore` (`<p>console-session:*`, its one key family); it never
writes job state itself and downloads nothing at run time (htmx is a file of this package). Pages read without
JavaScript; every mutating form is a POST carrying the session's CSRF token.

    mount_console(app)    # in `jobqueue.api.app.create_app`, after the API's routers
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from starlette.responses import Response
from starlette.staticfiles import StaticFiles

from jobqueue.console import jobs_list, pages, signin
from jobqueue.console.web import HERE, PageError, SignInNeeded, optional_session, redirect, render, sign_in_location

__all__ = ["mount_console"]


def mount_console(app: FastAPI) -> None:
    """Serve the console's pages and static files on `app`, and answer its errors as pages (not JSON)."""
    app.include_router(signin.router)
    app.include_router(jobs_list.router)  # before `pages`: /jobs/bulk-cancel is not a job id
    app.include_router(pages.router)
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
