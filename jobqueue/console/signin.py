"""Sign in with a token (an API `jq_` token or, where OIDC is on, a JWT: the API's own `BearerAuthenticator`),
and sign out. Signing in sets the session cookie: HttpOnly, SameSite=Strict, Secure when the request came over
https."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import jwt
from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from jobqueue.api.deps import audit_log, services
from jobqueue.auth.identity import Identity
from jobqueue.auth.oidc import Refusal
from jobqueue.console.oidc_signin import render_signin
from jobqueue.console.web import (
    COOKIE,
    SignedIn,
    form_fields,
    optional_session,
    redirect,
    require_csrf,
    safe_next,
    session_store,
)

router = APIRouter(include_in_schema=False)
Next = Annotated[str | None, Query(description="Where to go once signed in.")]


async def token_expiry(request: Request, token: str, identity: Identity) -> datetime | None:
    """When the token signed in with expires (the session never outlives it): a `jq_` token's record, a JWT's
    `exp` (the authenticator has verified the JWT by now)."""
    svc = await services(request)
    if identity.token_id is not None:
        info = await svc.tokens.get(identity.token_id)
        return info.expires_at if info is not None else None
    try:
        exp = jwt.decode(token, options={"verify_signature": False}).get("exp")
    except jwt.PyJWTError:
        return None
    return datetime.fromtimestamp(float(exp), UTC) if isinstance(exp, int | float) else None


@router.get("/signin")
async def signin_form(request: Request, next: Next = None) -> Response:
    if await optional_session(request) is not None:
        return redirect(safe_next(next))
    return await render_signin(request, next=safe_next(next))


@router.post("/signin")
async def signin(request: Request) -> Response:
    form = await form_fields(request)
    next_path = safe_next(form.get("next"))
    svc = await services(request)
    token = form.get("token", "").strip()
    found = await svc.auth.verify(token)
    if isinstance(found, Refusal):
        return await render_signin(request, 401, next=next_path, refusal=found.message)
    cookie, _ = await session_store(svc).create(found, await token_expiry(request, token, found))
    audit_log.info("console sign-in", actor=found.owner, actor_team=found.team, role=found.role.value,
                   token_id=found.token_id)
    response = redirect(next_path)
    response.set_cookie(COOKIE, cookie, max_age=svc.settings.console_session_seconds, path="/", httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")
    return response


@router.post("/signout")
async def signout(request: Request, session: SignedIn) -> Response:
    require_csrf(session, await form_fields(request))
    await session_store(await services(request)).delete(request.cookies.get(COOKIE))
    response = redirect("/signin")
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict",
                           secure=request.url.scheme == "https")
    return response
