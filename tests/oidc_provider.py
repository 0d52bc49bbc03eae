"""A tiny OpenID Connect issuer served over real HTTP on a free port, for the tests: its discovery document and JWKS
(keys made here, requests counted), and the authorization code flow a browser signs in with:

    GET  /authorize   a sign-in form for the request's client, redirect URI, state, nonce and PKCE challenge
                      (each checked: a bad one is a 400 page, as a real issuer refuses it)
    POST /authorize   "signs in" the user named in the form (`users`: name -> extra claims) and redirects the
                      browser to the redirect URI with a one-time code and the state
    POST /token       the code (once), the same redirect URI and client, the PKCE verifier that hashes to the
                      challenge, and the client secret when one is set (HTTP Basic) -> an ID token for the client
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

AUDIENCE = "jobqueue-api"
CONSOLE_CLIENT = "jobqueue-console"


class IdentityProvider:
    def __init__(self, host: str = "127.0.0.1") -> None:
        """`host`: the name in the issuer's URL ("localhost" is another site than the console's 127.0.0.1)."""
        self.keys: dict[str, Any] = {}  # kid -> private key
        self.jwks_requests = 0
        self.client_id = CONSOLE_CLIENT
        self.client_secret: str | None = None  # set: /token wants it (HTTP Basic)
        self.users: dict[str, dict[str, Any]] = {}  # user name -> extra ID token claims (team, role)
        self.codes: dict[str, dict[str, Any]] = {}  # code -> what /authorize was asked, who signed in
        self.token_requests: list[dict[str, str]] = []
        self.id_token_changes: dict[str, Any] = {}  # claims /token puts in every ID token (a wrong nonce...)
        self.server = _Server(self)
        self.issuer = f"http://{host}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def check_request(self, q: dict[str, str]) -> str | None:
        """What is wrong with an authorization request, as an issuer checks it (None: fine)."""
        if q.get("response_type") != "code" or q.get("client_id") != self.client_id:
            return "unknown client or response type"
        if "openid" not in q.get("scope", "").split():
            return "scope must include openid"
        if not q.get("redirect_uri", "").startswith("http") or not q.get("state") or not q.get("nonce"):
            return "redirect_uri, state and nonce are required"
        if q.get("code_challenge_method") != "S256" or len(q.get("code_challenge", "")) != 43:
            return "PKCE with S256 is required"
        return None

    def check_token(self, form: dict[str, str], asked: dict[str, str] | None, authorization: str | None) -> str | None:
        if form.get("grant_type") != "authorization_code" or asked is None:
            return "invalid_grant"
        if form.get("redirect_uri") != asked["redirect_uri"] or form.get("client_id") != self.client_id:
            return "invalid_grant"
        verifier = form.get("code_verifier", "")
        digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if digest != asked["code_challenge"]:
            return "invalid_grant"  # PKCE: not the verifier of the challenge
        if self.client_secret is not None:
            expected = "Basic " + base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
            if authorization != expected:
                return "invalid_client"
        return None

    def add_key(self, kid: str, kind: str = "RSA") -> None:
        if kind == "RSA":
            self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            self.keys[kid] = ec.generate_private_key(ec.SECP256R1())

    def public_jwk(self, kid: str) -> dict[str, Any]:
        key = self.keys[kid]
        if isinstance(key, rsa.RSAPrivateKey):
            jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True) | {"alg": "RS256"}
        else:
            jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True) | {"alg": "ES256"}
        return jwk | {"kid": kid, "use": "sig"}

    def token(self, kid: str = "k1", signer: Any = None, **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": self.issuer, "aud": AUDIENCE, "sub": "0f6c2d", "preferred_username": "alice", "team": "risk",
                "iat": now, "exp": now + 300} | claims
        body = {k: v for k, v in body.items() if v is not None}
        key = signer or self.keys[kid]
        alg = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
        return jwt.encode(body, key, algorithm=alg, headers={"kid": kid})

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Server(ThreadingHTTPServer):
    def __init__(self, provider: IdentityProvider) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.provider = provider


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
        path, _, query = self.path.partition("?")
        if path == "/.well-known/openid-configuration":
            issuer = self.server.provider.issuer
            self.json(200, {"issuer": issuer, "jwks_uri": issuer + "/keys",
                            "authorization_endpoint": issuer + "/authorize", "token_endpoint": issuer + "/token",
                            "code_challenge_methods_supported": ["S256"],
                            "token_endpoint_auth_methods_supported": ["client_secret_basic", "none"]})
        elif path == "/keys":
            p = self.server.provider
            p.jwks_requests += 1
            self.json(200, {"keys": [p.public_jwk(kid) for kid in list(p.keys)]})
        elif path == "/authorize":
            self.authorize_form({k: v[0] for k, v in parse_qs(query).items()})
        else:
            self.send_error(404)

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
        if self.path == "/authorize":
            self.authorize(form)
        elif self.path == "/token":
            self.token(form)
        else:
            self.send_error(404)

    def authorize_form(self, q: dict[str, str]) -> None:
        problem = self.server.provider.check_request(q)
        if problem:
            self.page(400, f"<p>{html.escape(problem)}</p>")
            return
        hidden = "".join(f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
                         for k, v in q.items())
        self.page(200, f'<h1>Test issuer</h1><form method="post" action="/authorize">{hidden}'
                       '<label for="u">Username</label><input id="u" name="username">'
                       '<button type="submit">Continue</button></form>')

    def authorize(self, form: dict[str, str]) -> None:
        problem = self.server.provider.check_request(form) or (
            None if form.get("username") in self.server.provider.users else "no such user")
        if problem:
            self.page(400, f"<p>{html.escape(problem)}</p>")
            return
        code = secrets.token_urlsafe(24)
        self.server.provider.codes[code] = form
        self.send_response(302)
        self.send_header("Location", form["redirect_uri"] + "?" + urlencode({"code": code,
                                                                            "state": form["state"]}))
        self.send_header("Content-Length", "0")
        self.end_headers()

    def token(self, form: dict[str, str]) -> None:
        self.server.provider.token_requests.append(form)
        asked = self.server.provider.codes.pop(form.get("code", ""), None)  # a code works once
        error = self.server.provider.check_token(form, asked, self.headers.get("Authorization"))
        if error or asked is None:
            self.json(400, {"error": error or "invalid_grant", "error_description": "refused"})
            return
        p = self.server.provider
        claims = {"aud": p.client_id, "nonce": asked["nonce"], "preferred_username": asked["username"],
                  **p.users[asked["username"]], **p.id_token_changes}
        self.json(200, {"access_token": secrets.token_urlsafe(16), "token_type": "Bearer",
                        "expires_in": 300, "id_token": p.token(**claims)})

    def json(self, status: int, body: dict[str, Any]) -> None:
        self.reply(status, json.dumps(body).encode(), "application/json")

    def page(self, status: int, body: str) -> None:
        self.reply(status, f"<!doctype html><title>Test issuer</title>{body}".encode(), "text/html")

    def reply(self, status: int, data: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


def callback_query(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
