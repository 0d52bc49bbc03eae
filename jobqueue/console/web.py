"""The console's request plumbing: rendering a template, the signed-in session of a request, CSRF, form bodies,
and the two ways a page ends early (sign in first; an error page).

    session = Depends(signed_in)                     # else 303 to /signin?next=<this page>
    return render(request, "jobs.html", session, jobs=...)
    form = await form_fields(request); require_csrf(session, form)   # in every mutating handler
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, quote, urlsplit

from fastapi import Depends, Request
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.responses import HTMLResponse, RedirectResponse, Response

from jobqueue.api.deps import Services, services
from jobqueue.console import views
from jobqueue.console.sessions import Session, SessionStore

HERE = Path(__file__).parent
COOKIE = "jobqueue_console"
MAX_FORM_BYTES = 64 * 1024
# Everything from this origin only: no inline script or style, no framing, forms post here only.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

templates = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]),
                        trim_blocks=True, lstrip_blocks=True)
templates.filters.update(duration=views.duration, size=views.size, when=views.when)


class SignInNeeded(Exception):
    """No (live) session: the page answers 303 to the sign-in form, which comes back to `next`."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


class PageError(Exception):
    """A page that cannot be shown: its status and what to tell the reader."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def session_store(svc: Services) -> SessionStore:
    return SessionStore(svc.client.redis, svc.client.keys, svc.tokens, svc.settings.console_session_seconds)


def here(request: Request) -> str:
    """This request's path and query: where to come back to."""
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


async def optional_session(request: Request) -> Session | None:
    return await session_store(await services(request)).get(request.cookies.get(COOKIE))


async def signed_in(request: Request) -> Session:
    session = await optional_session(request)
    if session is None:
        raise SignInNeeded(here(request))
    return session


SignedIn = Annotated[Session, Depends(signed_in)]


def safe_next(value: str | None) -> str:
    """A place on this site to go after signing in: a local path, never another origin (`//host`, `/\\host`)."""
    if value and value.startswith("/") and not value.startswith(("//", "/\\")) and "\n" not in value:
        return value
    return "/jobs"


def render(request: Request, template: str, session: Session | None, status: int = 200, **context: Any) -> Response:
    body = templates.get_template(template).render(request=request, session=session, **context)
    return HTMLResponse(body, status_code=status, headers=SECURITY_HEADERS)


def redirect(location: str, headers: dict[str, str] | None = None) -> RedirectResponse:
    return RedirectResponse(location, status_code=303, headers={**SECURITY_HEADERS, **(headers or {})})


async def form_fields(request: Request) -> dict[str, str]:
    """An urlencoded form body as name -> first value (no multipart: the console's forms send none). A form a
    browser posts from another site is refused by its `Origin` (the sign-in form has no session to carry a CSRF
    token yet: this keeps another site from signing a browser in as someone else)."""
    origin = request.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
        raise PageError(403, f"this form was posted from another site ({origin}); use the console's own page")
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise PageError(413, "this form is too large")
    parsed = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    return {name: values[0] for name, values in parsed.items()}


def require_csrf(session: Session, form: dict[str, str]) -> None:
    """Every mutating form carries the session's CSRF token; a POST without it (or with another) is refused."""
    if not session.csrf_ok(form.get("csrf")):
        raise PageError(403, "this form is stale or did not come from this console (its CSRF token does not match "
                        "your session): reload the page and try again")


def sign_in_location(next_path: str) -> str:
    return "/signin?next=" + quote(next_path, safe="")
