"""The HTTP API: where clients find it and with which token, how `jobqueue api` serves, staged uploads and presigned
URLs (and when the SDK uses them), and the web console's sessions and live pages."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings

from jobqueue.setting_groups import ByteSize


class ApiSettings(BaseSettings):
    api_url: str | None = Field(
        default=None,
        description="URL of the jobqueue HTTP API the SDK and the CLI talk to (`https://jobqueue.example.com`). Set, "
        "it wins over everything else: the client needs no Redis, storage credentials or registry file. Unset, "
        "and JOBQUEUE_REDIS_URL unset too: the API a running `jobqueue up` recorded in `<home>/api.url` "
        "(docs/sdk.md, 'Which server').",
    )
    api_token: SecretStr | None = Field(
        default=None,
        description="Bearer token for JOBQUEUE_API_URL (`jobqueue tokens create`); never logged or shown. Unset "
        "with the API of a local `jobqueue up`: the token it wrote to `<home>/api.token`.",
    )
    api_host: str = Field(
        default="127.0.0.1", min_length=1,
        description="Address `jobqueue api` (and the API `jobqueue up` starts) binds: loopback by default; "
        "`0.0.0.0` behind a Kubernetes Service.",
    )
    api_port: int = Field(
        default=8080, ge=0, le=65535,
        description="Port of `jobqueue api` (0: any free port). `jobqueue up` uses it when it is free, else any "
        "free port, and writes the URL to `<home>/api.url`.",
    )
    api_workers: int | None = Field(
        default=None, ge=1, le=64,
        description="Processes `jobqueue api` serves with (uvicorn workers sharing one socket; the API is "
        "stateless). One process uses at most one core. Default: the cores the process may use (its cgroup CPU "
        "quota, else the CPUs it may run on), at most 4 (past a few, add replicas). The Helm chart sets 1 per "
        "pod (scale with `api.replicas`). The API `jobqueue up` starts is always one.",
    )
    api_cache_seconds: float = Field(
        default=1.0, ge=0, le=60,
        description="How long an API process reuses what every submission reads from Redis: the current registry "
        "version and the groups the manager serves (0: read them on every call). An apply through this process "
        "is seen at once; through another, within this time.",
    )
    api_token_cache_seconds: float = Field(
        default=1.0, ge=0, le=60,
        description="How long an API process reuses the identity of an API token (`jq_...`) it has verified, "
        "instead of reading the token's record in Redis on every request (0: read it every time). A revoked or "
        "expired token is refused by every API process at most this long after.",
    )
    api_max_body_bytes: ByteSize = Field(
        default=1 << 30, ge=1,
        description="Largest request body the API accepts (a query's Arrow or Parquet input), e.g. `256MiB`; a "
        "bigger one is answered 413 naming this limit.",
    )
    api_list_scan_limit: int = Field(
        default=10_000, ge=100,
        description="Most listing-index entries one `GET /v1/jobs` page (or console jobs page) looks at to fill "
        "itself; a page that stops there returns a cursor to go on from.",
    )
    # --- staged uploads and presigned URLs (S3 storage only; jobqueue.api.uploads, jobqueue.uploads) ---
    api_max_upload_bytes: ByteSize = Field(
        default=1 << 30, ge=1, le=5 << 30,
        description="Largest input a client may stage with a presigned PUT (`POST /v1/uploads`), e.g. `2GiB`; the "
        "size is signed into the URL, and a staged object over it is refused at submit (413). The API checks and "
        "stages a staged input batch by batch (its Parquet footer, or one pass over an Arrow stream), never holding "
        "the whole table. At most 5 GiB, S3's limit for one PUT.",
    )
    api_presign_seconds: int = Field(
        default=900, ge=1, le=7 * 24 * 3600,
        description="How long a presigned URL works: the PUT of an upload (never past its reference's "
        "JOBQUEUE_API_UPLOAD_TTL_SECONDS) and the GET of a result (`GET /v1/jobs/{id}/result-url`).",
    )
    api_upload_ttl_seconds: int = Field(
        default=3600, ge=1,
        description="How long an upload reference can be submitted with; an object staged under one that was "
        "never submitted is removed by the manager's garbage collector after it (and JOBQUEUE_GC_GRACE_SECONDS).",
    )
    upload_threshold_bytes: ByteSize = Field(
        default=64 << 20, ge=0,
        description="Over HTTP, the SDK stages an input bigger than this (as an Arrow stream) with a presigned PUT "
        "when the service's storage is S3, and submits the reference; smaller inputs, or any with local storage, "
        "go in the request body.",
    )
    console_session_seconds: int = Field(
        default=8 * 3600, ge=60,
        description="How long a web console sign-in lasts (its session record's TTL in Redis); never past the "
        "expiry of the token it was made from, and a revoked token ends it at the next page.",
    )
    console_max_pending_signins: int = Field(
        default=10_000, ge=1, le=1_000_000,
        description="Most OIDC sign-ins that may be under way at once (started at the issuer, not yet back; each "
        "waits up to 10 minutes in Redis, under 1 KiB): anyone may start one without a token, so this bounds what "
        "a flood of them can hold in the service's Redis. One more is answered 503 until some finish or expire; "
        "signing in with a token still works.",
    )
    console_live_streams_per_session: int = Field(
        default=6, ge=1, le=1000,
        description="Most live update streams (the job page's server-sent events) one console sign-in may hold open "
        "at once; one more is answered 429.",
    )
    console_live_check_seconds: float = Field(
        default=15.0, gt=0, le=3600,
        description="How often an open live stream re-checks its sign-in (a revoked token or a sign-out ends the "
        "stream) and re-reads its job (progress, and any change whose message was lost).",
    )
