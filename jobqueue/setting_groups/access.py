"""Who may do what: per-team metrics, what a `user` sees, quotas (and the fair share and running limits of teams), and
the OpenID Connect issuer whose JWTs the API accepts and the console signs in with."""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode

from jobqueue.attribution import TeamName
from jobqueue.quotas import TeamQuota

# JWT signature algorithms JOBQUEUE_OIDC_ALGORITHMS may name: asymmetric ones only (never `none` or a shared secret)
OIDC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")


class AccessSettings(BaseSettings):
    metrics_max_teams: int = Field(
        default=50, ge=0,
        description="Most teams the manager exports per-team job counters for (`jobqueue_team_jobs_total{team}`): "
        "teams get a label in the order the manager first sees them, later ones are summed as `team=\"_other\"`, "
        "so the label stays bounded whatever teams clients write.",
    )
    users_see_team_jobs: bool = Field(
        default=False,
        description="Whether a token with role `user` sees and cancels the jobs of its whole team, not only its own.",
    )
    quota_max_queued_per_owner: int = Field(
        default=0, ge=0,
        description="Most unfinished (queued or running) jobs one owner may have; a submission past it is refused "
        "with `QuotaExceededError` (the API: 429) and nothing is staged. 0: no limit. Scheduled runs count, and are "
        "never refused.",
    )
    quota_max_queued_per_team: int = Field(
        default=0, ge=0, description="Most unfinished (queued or running) jobs one team may have. 0: no limit.",
    )
    quota_max_input_rows: int = Field(
        default=0, ge=0,
        description="Most input rows of one job (a quota, refused with `QuotaExceededError`; JOBQUEUE_MAX_INPUT_ROWS "
        "stays the hard limit of every input). 0: no limit.",
    )
    quota_max_pending_uploads_per_owner: int = Field(
        default=100, ge=0,
        description="Most upload references (`POST /v1/uploads`, S3 staging) one owner may hold at once, not yet "
        "submitted or expired; each may stage up to JOBQUEUE_API_MAX_UPLOAD_BYTES in the object store until it "
        "expires. One more is refused with `QuotaExceededError` (the API: 429, `max_pending_uploads_per_owner`). "
        "0: no limit.",
    )
    quota_team_overrides: Annotated[dict[TeamName, TeamQuota], NoDecode] = Field(
        default_factory=dict,
        description="Per-team quotas, JSON: `{\"risk\": {\"max_queued\": 500, \"max_queued_per_owner\": 50, "
        "\"max_input_rows\": 0, \"max_running\": 4}}`. Each key given replaces the default for that team's jobs "
        "(0: no limit).",
    )
    quota_max_running_per_team: int = Field(
        default=0, ge=0,
        description="Most jobs one team may have running at once in each resource group, enforced by consumers "
        "when they take a job (atomically: never more, whichever consumers race). A job over it stays queued in "
        "its fair-share place, and says why (`waiting: team risk at its limit of 4 running`). Per team: "
        "`max_running` in JOBQUEUE_QUOTA_TEAM_OVERRIDES. 0: no limit.",
    )
    fair_share: bool = Field(
        default=True,
        description="Order each group's queue by fair share across owners (start-time fair queuing: "
        "`jobqueue.fair_share`): a new owner's first job goes next, however long another owner's backlog; "
        "`priority` and JOBQUEUE_TEAM_WEIGHTS weight the share. false: plain FIFO by submission time.",
    )
    team_weights: Annotated[dict[TeamName, Annotated[float, Field(gt=0, le=100)]], NoDecode] = Field(
        default_factory=dict,
        description="Fair-share weights of teams, JSON: `{\"risk\": 2, \"batch\": 0.5}`; a team not named "
        "weighs 1. A job's share is its team's weight times its priority's (high 4, normal 2, low 1). Each weight "
        "is above 0 and at most 100.",
    )
    oidc_issuer: str = Field(
        default="",
        description="The OpenID Connect issuer whose JWTs the API accepts as bearer tokens, besides `jq_` API tokens "
        "(its `iss`, e.g. `https://login.example.com/realms/data`). Empty: OIDC is off.",
    )
    oidc_jwks_url: str = Field(
        default="",
        description="Where the issuer's signing keys (JWKS) are. Empty: `jwks_uri` of "
        "`<issuer>/.well-known/openid-configuration`.",
    )
    oidc_audience: str = Field(
        default="",
        description="The `aud` a JWT must carry (the client id the IdP issues the tokens for); required with "
        "JOBQUEUE_OIDC_ISSUER, so that a token issued for another application is refused.",
    )
    oidc_owner_claim: str = Field(
        default="preferred_username", min_length=1,
        description="The claim that is a JWT's owner. There is no fallback to another claim: a token without it is "
        "refused (set `sub` here for machine clients).",
    )
    oidc_team_claim: str = Field(
        default="team",
        description="The claim that is a JWT's team (a string, or a list of one); absent: no team. Empty: never a "
        "team.",
    )
    oidc_role_claim: str = Field(
        default="jobqueue_role",
        description="The claim that is a JWT's role (`user`, `operator` or `admin`; a list: the highest of them). "
        "Missing or unknown: `user`.",
    )
    oidc_client_id: str = Field(
        default="",
        description="The web console's client id at the OIDC issuer: set it (with JOBQUEUE_OIDC_ISSUER) and the "
        "sign-in page offers \"Sign in with <issuer>\" (authorization code flow with PKCE). The ID tokens it gets "
        "must carry this id as their audience. Empty: the console takes pasted tokens only.",
    )
    oidc_client_secret: SecretStr | None = Field(
        default=None,
        description="The console's client secret at the issuer (HTTP Basic at the token endpoint, or in the form "
        "when the issuer accepts only `client_secret_post`). Unset: a public client (PKCE only). Never logged.",
    )
    oidc_redirect_url: str = Field(
        default="",
        description="The URL the issuer sends the browser back to, as registered there (it ends in "
        "`/signin/oidc/callback`). Empty: this request's own origin + `/signin/oidc/callback` (set it behind a "
        "proxy that changes the host or scheme).",
    )
    oidc_scopes: str = Field(
        default="openid profile",
        description="The scopes the console's sign-in asks for, space-separated (`openid` is always sent).",
    )
    oidc_algorithms: str = Field(
        default="RS256,ES256",
        description="The signature algorithms a JWT may use, comma-separated (asymmetric only: RS*, PS*, ES*, "
        "EdDSA).",
    )

    @field_validator("quota_team_overrides", "team_weights", mode="before")
    @classmethod
    def _json_overrides(cls, v: Any) -> Any:
        """JSON text given as a value (from `to_env`), as the environment gives it."""
        return json.loads(v) if isinstance(v, str) else v

    @model_validator(mode="after")
    def _check_oidc(self) -> AccessSettings:
        if not self.oidc_issuer:
            if self.oidc_client_id:
                raise ValueError("JOBQUEUE_OIDC_CLIENT_ID is set without JOBQUEUE_OIDC_ISSUER: set the issuer the "
                                 "console signs in with, or unset the client id")
            return self
        if self.oidc_redirect_url and not self.oidc_redirect_url.startswith(("https://", "http://")):
            raise ValueError(f"JOBQUEUE_OIDC_REDIRECT_URL: {self.oidc_redirect_url!r} is not an http(s) URL; give the "
                             "console's callback as registered at the issuer, e.g. "
                             "https://jobqueue.example.com/signin/oidc/callback")
        if not self.oidc_audience:
            raise ValueError("JOBQUEUE_OIDC_AUDIENCE must be set with JOBQUEUE_OIDC_ISSUER: the client id the "
                             "identity provider issues jobqueue's tokens for")
        unknown = [a for a in self.oidc_algorithm_list if a not in OIDC_ALGORITHMS]
        if unknown or not self.oidc_algorithm_list:
            raise ValueError(f"JOBQUEUE_OIDC_ALGORITHMS: {', '.join(unknown) or 'none given'}; use some of "
                             f"{', '.join(OIDC_ALGORITHMS)}")
        return self

    @property
    def oidc_algorithm_list(self) -> list[str]:
        return [a.strip() for a in self.oidc_algorithms.split(",") if a.strip()]
