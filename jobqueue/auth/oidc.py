"""Bearer tokens of every kind, checked in one place: `jq_` API tokens (`TokenStore`) and, when JOBQUEUE_OIDC_ISSUER
is set, JWTs of that OpenID Connect issuer.

    authenticator = BearerAuthenticator.from_settings(settings, token_store)
    found = await authenticator.verify(token)      # an Identity, or a Refusal
    if isinstance(found, Refusal):
        ... answer found.status (401, or 503 when the issuer's keys cannot be fetched) with found.message

A JWT is accepted when it is signed by a key of the issuer's JWKS (`jobqueue.auth.jwks`) with an allowed algorithm
(JOBQUEUE_OIDC_ALGORITHMS: asymmetric only), its `iss` is the issuer, its `aud` holds JOBQUEUE_OIDC_AUDIENCE, and
it has not expired (`exp` is required; `nbf` and `iat` are checked when present, with `LEEWAY` of clock skew).

Claims to identity:
- owner: the claim JOBQUEUE_OIDC_OWNER_CLAIM (`preferred_username`), with no fallback: a token without it is
  refused. A fallback to `sub` would give one person two owners (their jobs split), and could let a machine
  client whose `sub` is somebody's user name act as that user. Machine clients: set the claim to `sub`.
- team: JOBQUEUE_OIDC_TEAM_CLAIM (`team`), a string or a list of one; absent: no team.
- role: JOBQUEUE_OIDC_ROLE_CLAIM (`jobqueue_role`), `user`, `operator` or `admin` (a list: the highest it names);
  missing or unknown: `user`.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Any

import jwt
from jwt.exceptions import (
    ExpiredSignatureError,
    ImmatureSignatureError,
    InvalidAlgorithmError,
    InvalidAudienceError,
    InvalidIssuedAtError,
    InvalidIssuerError,
    InvalidSignatureError,
    InvalidTokenError,
    MissingRequiredClaimError,
    PyJWTError,
)

from jobqueue.attribution import OWNER_PATTERN, TEAM_PATTERN
from jobqueue.auth.identity import Identity, Role
from jobqueue.auth.jwks import JwksCache, JwksUnavailable
from jobqueue.auth.tokens import FAILURE_MESSAGES, TOKEN_PREFIX, AuthFailure, TokenStore
from jobqueue.settings import Settings

LEEWAY = 30  # seconds of clock skew allowed on exp, nbf and iat
_NEW_TOKEN = "sign in again for a new token"


class RefusalReason(enum.StrEnum):
    """Why a bearer token is refused: the `jq_` token reasons (`AuthFailure`), then the JWT ones."""

    MISSING = "missing"
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    REVOKED = "revoked"
    MALFORMED = "malformed"
    OIDC_OFF = "oidc_off"
    WRONG_ISSUER = "wrong_issuer"
    WRONG_AUDIENCE = "wrong_audience"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    ALGORITHM = "algorithm"
    NOT_YET_VALID = "not_yet_valid"
    MISSING_CLAIM = "missing_claim"
    BAD_CLAIM = "bad_claim"
    KEYS_UNAVAILABLE = "keys_unavailable"


@dataclass(frozen=True)
class Refusal:
    """A refused bearer token: why (`reason`, for the `WWW-Authenticate` error description) and what to do."""

    reason: RefusalReason
    message: str

    @property
    def status(self) -> int:
        """401, but 503 when the token could not be checked at all (the issuer's keys are out of reach)."""
        return 503 if self.reason is RefusalReason.KEYS_UNAVAILABLE else 401


@dataclass(frozen=True)
class OidcConfig:
    issuer: str
    jwks_url: str
    audience: str
    owner_claim: str
    team_claim: str
    role_claim: str
    algorithms: tuple[str, ...]

    @classmethod
    def from_settings(cls, settings: Settings) -> OidcConfig | None:
        """The OIDC settings; None when JOBQUEUE_OIDC_ISSUER is empty (OIDC off)."""
        if not settings.oidc_issuer:
            return None
        return cls(settings.oidc_issuer, settings.oidc_jwks_url, settings.oidc_audience, settings.oidc_owner_claim,
                   settings.oidc_team_claim, settings.oidc_role_claim, tuple(settings.oidc_algorithm_list))


class OidcVerifier:
    """Checks JWTs of one issuer (see the module docstring)."""

    def __init__(self, config: OidcConfig, keys: JwksCache | None = None) -> None:
        self.config = config
        self.keys = keys or JwksCache(config.issuer, config.jwks_url)

    async def verify(self, token: str) -> Identity | Refusal:
        c = self.config
        try:
            header = jwt.get_unverified_header(token)
        except PyJWTError:
            return Refusal(RefusalReason.MALFORMED, "the bearer token is neither a jobqueue API token (jq_...) nor a "
                           f"JWT; send a token of {c.issuer} or from `jobqueue tokens create`")
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in c.algorithms:
            return Refusal(RefusalReason.ALGORITHM, f"the JWT is signed with {alg!r}, not one of "
                           f"{', '.join(c.algorithms)} (JOBQUEUE_OIDC_ALGORITHMS); configure the identity provider "
                           "to sign with one of them, or add its algorithm to the setting")
        if kid is not None and not isinstance(kid, str):
            return Refusal(RefusalReason.MALFORMED, "the JWT's key id (kid) is not a string")
        try:
            key = await self.keys.key(kid, str(alg))
        except JwksUnavailable as e:
            return Refusal(RefusalReason.KEYS_UNAVAILABLE, f"the signing keys of {c.issuer} cannot be fetched ({e}); "
                           "retry later, or check JOBQUEUE_OIDC_JWKS_URL and that the service reaches the issuer")
        if key is None:
            issuer = _unverified_claim(token, "iss")
            other = f" (it is of {issuer!r}, not {c.issuer!r})" if issuer and issuer != c.issuer else ""
            return Refusal(RefusalReason.UNKNOWN_KEY, f"the JWT is signed with key id {kid!r}, which the issuer's key "
                           f"set ({self.keys.url or c.issuer}) does not list{other}; {_NEW_TOKEN} from {c.issuer}, "
                           "or check JOBQUEUE_OIDC_ISSUER and JOBQUEUE_OIDC_JWKS_URL")
        try:
            claims = jwt.decode(token, key, algorithms=list(c.algorithms), audience=c.audience, issuer=c.issuer,
                                leeway=LEEWAY, options={"require": ["exp", "iss", "aud"]})
        except InvalidTokenError as e:
            return self._refusal(e, token)
        return self._identity(claims)

    def _refusal(self, error: InvalidTokenError, token: str) -> Refusal:
        c = self.config
        if isinstance(error, ExpiredSignatureError):
            return Refusal(RefusalReason.EXPIRED, f"the JWT has expired; {_NEW_TOKEN} from {c.issuer}")
        if isinstance(error, InvalidIssuerError):
            return Refusal(RefusalReason.WRONG_ISSUER, f"the JWT is issued by {_unverified_claim(token, 'iss')!r}; "
                           f"this service accepts tokens of {c.issuer!r} (JOBQUEUE_OIDC_ISSUER): get a token there")
        if isinstance(error, InvalidAudienceError):
            audience = _unverified_claim(token, "aud")
            return Refusal(RefusalReason.WRONG_AUDIENCE, f"the JWT is for audience {audience!r}, "
                           f"not {c.audience!r} (JOBQUEUE_OIDC_AUDIENCE); request the token for client {c.audience}")
        if isinstance(error, InvalidSignatureError):
            return Refusal(RefusalReason.BAD_SIGNATURE, "the JWT's signature does not verify with the issuer's key "
                           f"(altered, or signed by someone else); {_NEW_TOKEN} from {c.issuer}")
        if isinstance(error, InvalidAlgorithmError):
            return Refusal(RefusalReason.ALGORITHM, f"the JWT's algorithm does not fit its key: {error}; "
                           f"{_NEW_TOKEN} from {c.issuer}")
        if isinstance(error, ImmatureSignatureError | InvalidIssuedAtError):
            return Refusal(RefusalReason.NOT_YET_VALID, f"the JWT is not valid yet ({error}); check this host's "
                           "clock, or wait a moment")
        if isinstance(error, MissingRequiredClaimError):
            return Refusal(RefusalReason.MISSING_CLAIM, f"the JWT has no {error.claim!r} claim, which this service "
                           f"requires; configure the identity provider to issue it for client {c.audience}")
        return Refusal(RefusalReason.MALFORMED, f"the JWT is not valid: {error}; {_NEW_TOKEN} from {c.issuer}")

    def _identity(self, claims: dict[str, Any]) -> Identity | Refusal:
        c = self.config
        owner = claims.get(c.owner_claim)
        if owner is None or owner == "":
            return Refusal(RefusalReason.MISSING_CLAIM, f"the JWT has no {c.owner_claim!r} claim to name its owner "
                           "(JOBQUEUE_OIDC_OWNER_CLAIM); add it to the tokens the identity provider issues for client "
                           f"{c.audience}, or set JOBQUEUE_OIDC_OWNER_CLAIM to a claim they have (`sub`)")
        if not isinstance(owner, str) or not re.match(OWNER_PATTERN, owner):
            return Refusal(RefusalReason.BAD_CLAIM, f"the JWT's {c.owner_claim!r} claim is not a valid owner (letters, "
                           "digits, '_', '.', '@', '+' or '-', at most 128 characters); set JOBQUEUE_OIDC_OWNER_CLAIM "
                           "to a claim that is one")
        team = claims.get(c.team_claim) if c.team_claim else None
        if isinstance(team, list) and len(team) <= 1:
            team = team[0] if team else None
        if team is not None and (not isinstance(team, str) or not re.match(TEAM_PATTERN, team)):
            return Refusal(RefusalReason.BAD_CLAIM, f"the JWT's {c.team_claim!r} claim is not one team name (lowercase "
                           "letters, digits, '_' or '-'); map a single-valued team claim in the identity provider, "
                           "or set JOBQUEUE_OIDC_TEAM_CLAIM")
        return Identity(owner=owner, team=team or None, role=_role(claims.get(c.role_claim)))


def _role(value: Any) -> Role:
    names = value if isinstance(value, list) else [value]
    known = [Role(v) for v in names if isinstance(v, str) and v in Role.__members__.values()]
    return max(known, key=lambda r: r.rank, default=Role.USER)


def _unverified_claim(token: str, name: str) -> Any:
    try:
        return jwt.decode(token, options={"verify_signature": False}).get(name)
    except PyJWTError:
        return None


class BearerAuthenticator:
    """The one entry point of the API's authentication: a `jq_` token through `TokenStore`, anything else as a JWT
    of the configured issuer (refused when OIDC is off)."""

    def __init__(self, tokens: TokenStore, oidc: OidcVerifier | None = None) -> None:
        self.tokens = tokens
        self.oidc = oidc

    @classmethod
    def from_settings(cls, settings: Settings, tokens: TokenStore) -> BearerAuthenticator:
        config = OidcConfig.from_settings(settings)
        return cls(tokens, OidcVerifier(config) if config is not None else None)

    async def verify(self, token: str | None) -> Identity | Refusal:
        token = (token or "").strip()
        if self.oidc is not None and token and not token.startswith(f"{TOKEN_PREFIX}_"):
            return await self.oidc.verify(token)
        if self.oidc is None and token.count(".") == 2:
            return Refusal(RefusalReason.OIDC_OFF, "this looks like a JWT, but this service accepts only jobqueue API "
                           "tokens (jq_...): OIDC is off (JOBQUEUE_OIDC_ISSUER is not set)")
        found = await self.tokens.verify(token)
        if found.identity is not None:
            return found.identity
        failure = found.failure or AuthFailure.UNKNOWN
        return Refusal(RefusalReason(failure.value), FAILURE_MESSAGES[failure])
