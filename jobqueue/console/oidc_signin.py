"""Sign in with the OIDC issuer: the authorization code flow with PKCE (S256), `state` and `nonce`, for a browser.
On when JOBQUEUE_OIDC_ISSUER and JOBQUEUE_OIDC_CLIENT_ID are set; the sign-in page then offers "Sign in with
<issuer>".

    GET /signin/oidc?next=/jobs      -> 303 to the issuer's authorization endpoint (from its discovery document)
    GET /signin/oidc/callback?code&state
        -> the code is exchanged at the token endpoint (with the PKCE verifier, and the client secret when set),
           the ID token is checked by the API's own `OidcVerifier` (signature by the issuer's JWKS, issuer, expiry;
           its audience must be the client id) and its `nonce`; then the same console session as a pasted token.

What a sign-in under way needs (the PKCE verifier, the nonce, where to go) waits in Redis under the SHA-256 of its
`state` (`Keys.oidc_login`, 10 minutes, taken once: a replayed callback finds nothing), so any API replica can
answer the callback. Anyone may start a sign-in without a token, so how many may be under way at once is capped
(JOBQUEUE_CONSOLE_MAX_PENDING_SIGNINS, counted in `Keys.oidc_logins` as `jobqueue.capped_records` stores one): a
flood of starts holds at most that many in Redis, which also carries every job, and is answered 503 past it.
The browser that started it holds a random binding cookie (HttpOnly, SameSite=Lax: it must
come back on the issuer's cross-site redirect, and only to `/signin/oidc`); the callback refuses a `state` started
in another browser, so nobody can sign a victim's browser in with their own account. The console session lasts
JOBQUEUE_CONSOLE_SESSION_SECONDS: the issuer has just authenticated the person, and the ID token's own (often
minutes-long) lifetime is for the exchange only. The callback answers a page that refreshes itself to `next`, not a
redirect: the browser sends a SameSite=Strict cookie on no navigation that began at another site.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import secrets
import time
from typing import Annotated, Any
from urllib.parse import urlencode, urlsplit

import httpx
import jwt
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel
from redis.asyncio import Redis
from starlette.responses import Response

from jobqueue.api.deps import Services, audit_log, services
from jobqueue.auth.jwks import DISCOVERY_PATH, JwksUnavailable, fetch_json
from jobqueue.auth.oidc import OidcVerifier, Refusal
from jobqueue.capped_records import CappedRecords
from jobqueue.console.web import COOKIE, PageError, redirect, render, safe_next, session_store
from jobqueue.keys import Keys
from jobqueue.settings import Settings

router = APIRouter(include_in_schema=False)
CALLBACK_PATH = "/signin/oidc/callback"
BINDING_COOKIE = "jobqueue_oidc"
LOGIN_SECONDS = 600  # how long a sign-in may take at the issuer
DISCOVERY_SECONDS = 300.0  # how long the issuer's discovery document is kept
TOKEN_TIMEOUT = 10.0
_discovered: dict[str, tuple[float, dict[str, Any]]] = {}  # issuer -> (fetched at, document)


class PendingLogin(BaseModel):
    """The JSON value of `<p>oidc-login:<sha256 of state>`."""

    verifier: str  # the PKCE code verifier
    nonce: str
    next: str
    browser: str  # SHA-256 of the binding cookie of the browser that started it
    redirect_uri: str


class PendingLogins:
    """The sign-ins under way, in Redis: stored under the SHA-256 of their `state` up to a cap on how many at once,
    and taken once."""

    def __init__(self, redis: Redis, keys: Keys, cap: int, seconds: int = LOGIN_SECONDS) -> None:
        self.redis, self.keys, self.cap, self.ttl_ms = redis, keys, cap, seconds * 1000
        self._capped = CappedRecords(redis)

    async def start(self, state: str, pending: PendingLogin) -> bool:
        """Store `pending` for `state`; False (and nothing stored) when `cap` sign-ins are already under way."""
        member = _digest(state)
        stored, _ = await self._capped.store(self.keys.oidc_login(member), pending.model_dump_json(),
                                             self.keys.oidc_logins, member, self.ttl_ms, self.cap)
        return stored

    async def take(self, state: str) -> PendingLogin | None:
        """The sign-in started with `state`, once (a second take finds nothing); its place under the cap is freed."""
        member = _digest(state)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.getdel(self.keys.oidc_login(member))
            pipe.zrem(self.keys.oidc_logins, member)
            raw, _ = await pipe.execute()
        return PendingLogin.model_validate_json(raw) if raw else None


def pending_logins(svc: Services) -> PendingLogins:
    return PendingLogins(svc.client.redis, svc.client.keys, svc.settings.console_max_pending_signins)


def browser_signin_on(settings: Settings) -> bool:
    return bool(settings.oidc_issuer and settings.oidc_client_id)


def provider_name(settings: Settings) -> str | None:
    """What the sign-in button names ("Sign in with login.example.com/realms/data"); None: OIDC sign-in is off."""
    if not browser_signin_on(settings):
        return None
    return settings.oidc_issuer.split("://", 1)[-1].rstrip("/")


async def render_signin(request: Request, status: int = 200, **context: Any) -> Response:
    """The sign-in page, with the OIDC button when browser sign-in is on."""
    provider = provider_name((await services(request)).settings)
    return render(request, "signin.html", None, status=status, oidc_provider=provider, **context)


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def code_challenge(verifier: str) -> str:
    """RFC 7636 S256: base64url of the SHA-256 of the verifier, without padding."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()


async def discovery(settings: Settings) -> dict[str, Any]:
    """The issuer's discovery document (cached); a `PageError` 503 naming the issuer when it cannot be had."""
    issuer = settings.oidc_issuer.rstrip("/")
    cached = _discovered.get(issuer)
    if cached is not None and time.monotonic() - cached[0] < DISCOVERY_SECONDS:
        return cached[1]
    try:
        document = await asyncio.to_thread(fetch_json, issuer + DISCOVERY_PATH, TOKEN_TIMEOUT)
    except JwksUnavailable as e:
        raise PageError(503, f"cannot reach the sign-in service {issuer} ({e}); sign in with a token, or retry "
                        "later") from None
    for needed in ("authorization_endpoint", "token_endpoint"):
        if not isinstance(document.get(needed), str):
            raise PageError(503, f"{issuer}{DISCOVERY_PATH} names no {needed}: the issuer does not offer the "
                            "authorization code flow; sign in with a token")
    _discovered[issuer] = (time.monotonic(), document)
    return document


def redirect_uri(request: Request, settings: Settings) -> str:
    return settings.oidc_redirect_url or str(request.base_url).rstrip("/") + CALLBACK_PATH


@router.get("/signin/oidc")
async def start(request: Request, next: Annotated[str | None, Query(max_length=2000)] = None) -> Response:
    svc = await services(request)
    settings = svc.settings
    if not browser_signin_on(settings):
        raise PageError(404, "sign-in with OIDC is off here (JOBQUEUE_OIDC_CLIENT_ID is not set): sign in with a "
                        "token")
    document = await discovery(settings)
    state, binding = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    pending = PendingLogin(verifier=secrets.token_urlsafe(64), nonce=secrets.token_urlsafe(32), next=safe_next(next),
                           browser=_digest(binding), redirect_uri=redirect_uri(request, settings))
    if not await pending_logins(svc).start(state, pending):
        raise PageError(503, f"too many sign-ins are under way here (JOBQUEUE_CONSOLE_MAX_PENDING_SIGNINS="
                        f"{settings.console_max_pending_signins}, each kept up to {LOGIN_SECONDS // 60} minutes); "
                        "try again in a few minutes, or sign in with a token")
    scopes = ["openid", *(s for s in settings.oidc_scopes.split() if s != "openid")]
    query = urlencode({"response_type": "code", "client_id": settings.oidc_client_id,
                       "redirect_uri": pending.redirect_uri, "scope": " ".join(scopes), "state": state,
                       "nonce": pending.nonce, "code_challenge": code_challenge(pending.verifier),
                       "code_challenge_method": "S256"})
    endpoint = document["authorization_endpoint"]
    response = redirect(endpoint + ("&" if "?" in endpoint else "?") + query)
    response.set_cookie(BINDING_COOKIE, binding, max_age=LOGIN_SECONDS, path="/signin/oidc", httponly=True,
                        samesite="lax", secure=request.url.scheme == "https")
    return response


async def _refused(request: Request, status: int, message: str, next_path: str = "/jobs") -> Response:
    response = await render_signin(request, status, next=next_path, refusal=message)
    response.delete_cookie(BINDING_COOKIE, path="/signin/oidc", httponly=True, samesite="lax",
                           secure=request.url.scheme == "https")
    return response


async def exchange(settings: Settings, document: dict[str, Any], code: str, pending: PendingLogin) -> str:
    """The ID token for `code` from the token endpoint; a `PageError` naming what the issuer answered."""
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": pending.redirect_uri,
            "client_id": settings.oidc_client_id, "code_verifier": pending.verifier}
    auth: httpx.Auth | None = None
    secret = settings.oidc_client_secret
    if secret is not None:
        methods = document.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
        if "client_secret_basic" in methods:
            auth = httpx.BasicAuth(settings.oidc_client_id, secret.get_secret_value())
        else:
            form["client_secret"] = secret.get_secret_value()
    try:
        async with httpx.AsyncClient(timeout=TOKEN_TIMEOUT) as http:
            answer = await http.post(document["token_endpoint"], data=form, auth=auth or httpx.USE_CLIENT_DEFAULT,
                                     headers={"Accept": "application/json"})
    except httpx.HTTPError as e:
        raise PageError(502, f"cannot reach the token endpoint of {settings.oidc_issuer} ({e}); try again") from None
    try:
        body = answer.json()
    except ValueError:
        body = {}
    if answer.status_code != 200 or not isinstance(body, dict) or not isinstance(body.get("id_token"), str):
        said = body.get("error_description") or body.get("error") if isinstance(body, dict) else None
        raise PageError(401, f"the issuer refused the sign-in code (HTTP {answer.status_code}"
                        f"{': ' + str(said) if said else ''}); start again")
    return str(body["id_token"])


def id_token_verifier(svc: Services) -> OidcVerifier:
    """The API's verifier (its key cache), for ID tokens: their audience is the console's client id."""
    oidc = svc.auth.oidc
    assert oidc is not None, "OIDC sign-in is on only with JOBQUEUE_OIDC_ISSUER"
    if oidc.config.audience == svc.settings.oidc_client_id:
        return oidc
    return OidcVerifier(dataclasses.replace(oidc.config, audience=svc.settings.oidc_client_id), oidc.keys)


@router.get(CALLBACK_PATH)
async def callback(request: Request, code: Annotated[str | None, Query(max_length=4096)] = None,
                   state: Annotated[str | None, Query(max_length=512)] = None,
                   error: Annotated[str | None, Query(max_length=200)] = None,
                   error_description: Annotated[str | None, Query(max_length=1000)] = None) -> Response:
    svc = await services(request)
    settings = svc.settings
    if not browser_signin_on(settings):
        raise PageError(404, "sign-in with OIDC is off here: sign in with a token")
    pending = await pending_logins(svc).take(state) if state else None
    if error:
        return await _refused(request, 401, f"{settings.oidc_issuer} did not sign you in: {error}"
                        f"{' (' + error_description + ')' if error_description else ''}",
                        pending.next if pending else "/jobs")
    if pending is None or not code:
        return await _refused(request, 400, "this sign-in expired, was used already or was not started here; sign in "
                        "again")
    binding = request.cookies.get(BINDING_COOKIE) or ""
    if not hmac.compare_digest(_digest(binding), pending.browser):
        return await _refused(request, 400, "this sign-in was started in another browser (or its cookie is gone); sign "
                        "in again from this one", pending.next)
    id_token = await exchange(settings, await discovery(settings), code, pending)
    found = await id_token_verifier(svc).verify(id_token)
    if isinstance(found, Refusal):
        return await _refused(request, found.status, f"the ID token was refused: {found.message}", pending.next)
    nonce = jwt.decode(id_token, options={"verify_signature": False}).get("nonce")  # verified just above
    if not isinstance(nonce, str) or not hmac.compare_digest(nonce, pending.nonce):
        return await _refused(request, 400, "the ID token is not for this sign-in (its nonce differs); sign in again",
                        pending.next)
    cookie, _ = await session_store(svc).create(found, None)
    audit_log.info("console sign-in", actor=found.owner, actor_team=found.team, role=found.role.value,
                   via="oidc", issuer=settings.oidc_issuer, host=urlsplit(pending.redirect_uri).netloc)
    # a page that goes on by itself rather than a redirect: this navigation began at the issuer (another site), so
    # the browser would not send the new SameSite=Strict cookie on a redirect; it does on the page's own refresh
    response = render(request, "signed_in.html", None, next=pending.next)
    secure = request.url.scheme == "https"
    response.set_cookie(COOKIE, cookie, max_age=settings.console_session_seconds, path="/", httponly=True,
                        samesite="strict", secure=secure)
    response.delete_cookie(BINDING_COOKIE, path="/signin/oidc", httponly=True, samesite="lax", secure=secure)
    return response
