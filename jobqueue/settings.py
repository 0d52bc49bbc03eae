"""Every setting of jobqueue, read from `JOBQUEUE_*` environment variables or an env file.

This module is the one place settings are documented: each field's description is the
documentation, `jobqueue settings` prints them, and `docs/settings.md` is generated from them.
Unknown `JOBQUEUE_*` variables are rejected, so a misspelt setting fails loudly instead of
being ignored.
"""

from __future__ import annotations

import json
import os
import re
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BeforeValidator, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_core import to_jsonable_python
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from jobqueue.attribution import TeamName
from jobqueue.errors import NoServerError, SettingsError
from jobqueue.keys import Keys
from jobqueue.quotas import TeamQuota
from jobqueue.settings_errors import did_you_mean, settings_error
from jobqueue.sizes import parse_bytes

ENV_PREFIX = "JOBQUEUE_"
_ENVIRONMENT_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")

ByteSize = Annotated[int, BeforeValidator(parse_bytes)]
# JWT signature algorithms JOBQUEUE_OIDC_ALGORITHMS may name: asymmetric ones only (never `none` or a shared secret)
OIDC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")


def _default_home() -> Path:
    return Path.home() / ".jobqueue"


class Settings(BaseSettings):
    """jobqueue settings. Each field reads `JOBQUEUE_<FIELD>` unless its description names aliases."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=os.environ.get("JOBQUEUE_ENV_FILE", ".env"),
        env_file_encoding="utf-8",
        extra="forbid",
        frozen=True,
        populate_by_name=True,
    )

    environment: str = Field(
        default="dev",
        description="Environment name. It becomes the Redis key prefix `jobqueue:<environment>:`, "
        "so several environments can share one Redis.",
    )
    redis_url: str | None = Field(
        default=None, repr=False,
        description="Redis URL (`redis://`, or `rediss://` for TLS; an ACL user as `rediss://user@host:6380/0`). "
        "TLS files go in the query: `?ssl_ca_certs=/path/ca.crt` (and `ssl_certfile`, `ssl_keyfile` for client "
        "certificates). Unset: `jobqueue up` starts an embedded Valkey server and clients find it through "
        "`<home>/redis.url`.",
    )
    redis_password: SecretStr | None = Field(
        default=None, description="Redis password (or the ACL user's), kept out of the URL and of logs; "
        "a password in the URL wins.",
    )
    home: Path = Field(
        default_factory=_default_home,
        description="Directory for local state: embedded Redis data, default staging/results/spill dirs.",
    )
    staging_uri: str | None = Field(
        default=None,
        description="Where the SDK stages query input as Parquet: a local directory or a pyarrow URI "
        "(e.g. `s3://bucket/prefix`). Default `<home>/staging`.",
    )
    results_uri: str | None = Field(
        default=None,
        description="Where consumers write query results as Parquet. Default `<home>/results`.",
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="S3 endpoint (e.g. `http://127.0.0.1:9000` for MinIO); unset: AWS."
    )
    s3_region: str | None = Field(default=None, description="S3 region; unset: from the AWS config.")
    s3_access_key_id: str | None = Field(default=None, description="S3 access key; unset: the AWS chain.")
    s3_secret_access_key: SecretStr | None = Field(default=None, description="S3 secret key (never logged).")
    registry_path: Path | None = Field(
        default=None,
        description="Feature registry YAML (namespaces, primary keys, feature sources). The manager (`jobqueue up`) "
        "applies it at start as the current registry version when its content differs; a client that has it set "
        "refuses to submit while another version is current; consumers use it only for jobs that pin no version.",
    )
    schedules_path: Path | None = Field(
        default=None, description="Scheduled queries YAML (cron definitions); the manager fires them."
    )
    schedule_grace_seconds: float = Field(
        default=60.0, gt=0,
        description="A due time this recent still runs; older ones count as missed (manager was down).",
    )
    resource_groups_path: Path | None = Field(
        default=None,
        description="Resource groups YAML. Without it only the `default` group exists.",
    )
    spill_directory: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("JOBQUEUE_SPILL_DIRECTORY", "CHALK_VELOX_SPILL_DIRECTORY"),
        description="Local (NVMe) directory where DuckDB spills; each query gets its own subdirectory, "
        "removed afterwards. Alias: CHALK_VELOX_SPILL_DIRECTORY. Default `<home>/spill`.",
    )
    query_memory_limit_percent: float = Field(
        default=50.0,
        gt=0,
        le=100,
        validation_alias=AliasChoices(
            "JOBQUEUE_QUERY_MEMORY_LIMIT_PERCENT", "CHALK_VELOX_QUERY_DEFAULT_MEMORY_LIMIT_PERCENT"
        ),
        description="DuckDB `memory_limit` per query, as a percent of the container memory limit "
        "(cgroup v2 `memory.max`, v1 `memory.limit_in_bytes`, else physical RAM). The rest of the process "
        "(Python, Arrow, DuckDB's allocations outside its buffer pool) takes ~250 MB, so a 500 MB container "
        "stays under its limit at 50% and not at 60%. Alias: CHALK_VELOX_QUERY_DEFAULT_MEMORY_LIMIT_PERCENT.",
    )
    container_memory_bytes: ByteSize | None = Field(
        default=None,
        gt=0,
        description="Override the detected container memory (e.g. `2GiB`). The local backend sets it "
        "to each consumer's memory limit (the group's `memory`, or its share of RAM).",
    )
    local_memory_share_percent: float = Field(
        default=80.0, gt=0, le=100,
        description="Local backend: a consumer of a group without `memory` gets this percent of physical RAM "
        "divided by the group's `max_instances`, so the group's consumers fit the machine together.",
    )
    local_cgroup_parent: Path | None = Field(
        default=None,
        description="Local backend: the cgroup directory under which each consumer gets its memory cgroup "
        "(v2: memory must be delegable there). Default: the manager's own memory cgroup.",
    )
    query_threads: int | None = Field(
        default=None, gt=0,
        description="DuckDB `threads` per query. Default: the cgroup CPU quota (v2 `cpu.max`, v1 "
        "`cpu.cfs_quota_us`/`cpu.cfs_period_us`) in whole CPUs, else the CPUs available.",
    )
    spill_reserve_bytes: ByteSize = Field(
        default=1 << 30, ge=0,
        description="Free space kept on the spill volume (e.g. `10GiB`): the spill caps (DuckDB "
        "`max_temp_directory_size`) of all queries and the scan caches on the volume never add up to more than "
        "its free space minus this.",
    )
    spill_min_bytes: ByteSize = Field(
        default=64 << 20, ge=0,
        description="Spill space a query needs to start. Each query reserves its spill space in the volume's "
        "ledger (shared by all queries and scan caches on that volume); it gets what is not promised to others, "
        "minus this much for every other idle query slot on the volume, and at least this. A query that cannot "
        "get it waits for other queries to finish (up to JOBQUEUE_SPILL_WAIT_SECONDS).",
    )
    spill_wait_seconds: float = Field(
        default=300.0, ge=0,
        description="How long a query waits for JOBQUEUE_SPILL_MIN_BYTES of spill space held by other queries "
        "before it fails (retryably) with a message naming the volume and the numbers.",
    )
    spill_ledger_directory: Path | None = Field(
        default=None,
        description="Where the per-volume space ledgers live (one small JSON file per volume, guarded by `flock`). "
        "Every process sharing a volume must use the same directory. Default `<home>/ledger`.",
    )
    max_input_rows: int = Field(
        default=50_000_000, ge=1, description="Largest query input the SDK accepts, in rows; a bigger one is "
        "refused at submit (split it, or raise this).",
    )
    max_input_bytes: ByteSize = Field(
        default=8 << 30, ge=1, description="Largest query input the SDK accepts, in Arrow bytes (e.g. `8GiB`); a "
        "bigger one is refused at submit.",
    )
    wait_poll_seconds: float = Field(
        default=2.0, gt=0, description="`wait()` blocks on the job's finish event (Redis pub/sub) and reads the "
        "record again at the latest after this long: the safety net for a missed event (a Redis restart, a "
        "consumer of a version that does not publish it).",
    )
    team: str = Field(
        default="", pattern=r"^$|^[a-z0-9][a-z0-9_-]{0,62}$",
        description="The team the SDK records on the jobs it submits when `offline_query(team=...)` is not given "
        "(empty: none). Lowercase letters, digits, '_' or '-'.",
    )
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
    quota_team_overrides: Annotated[dict[TeamName, TeamQuota], NoDecode] = Field(
        default_factory=dict,
        description="Per-team quotas, JSON: `{\"risk\": {\"max_queued\": 500, \"max_queued_per_owner\": 50, "
        "\"max_input_rows\": 0}}`. Each key given replaces the default for that team's jobs (0: no limit).",
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
    table_scan_cache_bytes: ByteSize = Field(
        default=0, ge=0,
        validation_alias=AliasChoices("JOBQUEUE_TABLE_SCAN_CACHE_BYTES", "LIBCHALK_VELOX_TABLE_SCAN_SSD_CACHE_BYTES"),
        description="Table-scan SSD cache size per consumer (e.g. `200GiB`): object-store bytes of Parquet and "
        "Iceberg sources kept on local disk in 4 MiB blocks, scan-resistant eviction. 0: off. "
        "Alias: LIBCHALK_VELOX_TABLE_SCAN_SSD_CACHE_BYTES.",
    )
    table_scan_cache_directory: Path | None = Field(
        default=None, description="Scan cache directory. Default `<spill directory>/table_scan_cache`. Each consumer "
        "holds an exclusive lock on it.",
    )
    table_scan_cache_on_locked: Literal["fail", "uncached"] = Field(
        default="fail", description="When another process holds the cache directory: `fail` (the consumer exits "
        "with a message) or `uncached` (it runs without a cache).",
    )
    consumer_id: str | None = Field(
        default=None, description="Consumer identity. Default `<hostname>-<pid>` (the pod name on Kubernetes)."
    )
    consumer_slot: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="Set by the local backend per consumer slot (`<group>-<n>`, stable across restarts): the "
        "scan cache directory becomes `<scan cache directory>/slot-<slot>`, so consumers on one machine never "
        "share a cache and a restarted one finds its warm cache.",
    )
    consumer_http_port: int = Field(
        default=0, ge=-1, le=65535,
        description="Consumer port for /metrics (`jobqueue_consumer_*` and process metrics), /healthz, /readyz. "
        "0: any free port, logged at start as `ops server listening` with its `url` (the local backend always "
        "gives its consumers free ports: several run on one machine); -1: off. The Kubernetes backend sets 8080.",
    )
    consumer_poll_seconds: float = Field(
        default=0.2, gt=0, description="How often an idle consumer looks at its queue when nothing wakes it (a "
        "submission to its group wakes it at once; this catches deferred retries and missed wake-ups).",
    )
    consumer_heartbeat_seconds: float = Field(
        default=2.0, gt=0, description="How often a consumer publishes its presence and busy jobs."
    )
    consumer_drain_seconds: int = Field(
        default=3600,
        ge=0,
        description="On SIGTERM a consumer stops taking jobs and lets running ones finish for this long.",
    )
    consumer_exit_with_parent: bool = Field(
        default=False,
        description="Drain and exit when the parent process dies (set by the local backend).",
    )
    consumer_restart_backoff_max_seconds: float = Field(
        default=60.0, gt=0,
        description="Local backend: a consumer that exits unexpectedly within 30 s of its start is restarted "
        "after 2 s, doubling per such exit in a row up to this; `jobqueue status` shows its last error.",
    )
    job_heartbeat_ttl_seconds: float = Field(
        default=15.0, gt=0,
        description="A running job's heartbeat key lives this long unless renewed (every 0.5 s). When it "
        "expires, the manager's reaper re-queues the job (or fails it when its retries are used up).",
    )
    retry_backoff_seconds: float = Field(
        default=5.0, ge=0, description="Delay before a failed attempt is retried; doubles per attempt (cap 300 s)."
    )
    job_timeout_seconds: int = Field(default=6 * 3600, gt=0, description="Hard cap on one query's run time.")
    job_ttl_seconds: int = Field(
        default=7 * 24 * 3600, gt=0, description="How long job records stay in Redis after submission."
    )
    result_ttl_seconds: int | None = Field(
        default=None, gt=0,
        description="How long a query's result is kept after its job finished; the manager's garbage collector "
        "removes it then. Default: JOBQUEUE_JOB_TTL_SECONDS.",
    )
    gc_interval_seconds: float = Field(
        default=300.0, ge=0,
        description="How often the manager (the leader) runs the garbage collector: expired results, staged "
        "inputs no job needs, index entries of expired records. 0: never (e.g. with S3 lifecycle rules).",
    )
    gc_batch_size: int = Field(
        default=1000, gt=0,
        description="Items of each kind one garbage collector run examines at most; the next run goes on "
        "where it stopped.",
    )
    gc_grace_seconds: float = Field(
        default=3600.0, ge=0,
        description="A staged input without a job record, or the result folder of a job that did not succeed, "
        "is removed only once it is this old (a submission stages its input before it writes the record).",
    )
    manager_tick_seconds: float = Field(
        default=0.5, gt=0, description="Manager reconcile period: observe queues, decide, act."
    )
    manager_http_port: int = Field(
        default=9464, ge=-1, le=65535,
        description="Manager port for /metrics, /healthz, /readyz (0: any free port; -1: off).",
    )
    http_host: str = Field(
        default="127.0.0.1", min_length=1,
        description="Address the manager's and consumers' /metrics, /healthz, /readyz endpoints bind: loopback "
        "by default; `0.0.0.0` to be scraped and probed from outside (the chart and the Kubernetes backend set it).",
    )
    http_max_connections: int = Field(
        default=64, ge=1, description="Connections an endpoint holds at once; one more is closed at once.",
    )
    http_request_timeout_seconds: float = Field(
        default=10.0, gt=0, description="A client of those endpoints has this long to send its request, and as "
        "long again to take the answer; a slower or idle connection is dropped.",
    )
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
    api_workers: int = Field(
        default=1, ge=1, le=64,
        description="Processes `jobqueue api` serves with (uvicorn workers sharing one socket; the API is "
        "stateless). One process uses at most one core: set it to the cores the API may use. The API `jobqueue up` "
        "starts is always one.",
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
        description="Most job records one `GET /v1/jobs` page reads to fill itself; a page that stops there "
        "returns a cursor to go on from.",
    )
    # --- staged uploads and presigned URLs (S3 storage only; jobqueue.api.uploads, jobqueue.uploads) ---
    api_max_upload_bytes: ByteSize = Field(
        default=1 << 30, ge=1, le=5 << 30,
        description="Largest input a client may stage with a presigned PUT (`POST /v1/uploads`), e.g. `2GiB`; the "
        "size is signed into the URL, and a staged object over it is refused at submit (413). The API decodes a "
        "staged input from the store to check it (no copy of its bytes, but the table is in memory): size the "
        "API's memory for it. At most 5 GiB, S3's limit for one PUT.",
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
    group_history_seconds: float = Field(
        default=30.0, ge=1,
        description="The manager keeps one sample per resource group per this many seconds (the peaks of its queue "
        "and consumers in that time), for the last hour: the web console's sparklines (`<p>group-history:<group>`; "
        "30 s: one sample per pixel).",
    )
    scale_down_stabilization_seconds: float = Field(
        default=30.0,
        ge=0,
        description="Scale down only to the highest replica count recommended during this window.",
    )
    scale_to_zero_cooldown_seconds: float = Field(
        default=60.0, ge=0, description="A group scales to zero only after this long with no work."
    )
    consumer_stale_seconds: float = Field(
        default=15.0, gt=0, description="A consumer whose heartbeat is older than this is considered gone."
    )
    scaler_backend: Literal["local", "kubernetes"] = Field(
        default="local", description="How the manager runs consumers: local processes or Kubernetes."
    )
    kubernetes_namespace: str = Field(
        default="default", description="Namespace of the consumer Deployments and the leader Lease (the "
        "chart sets it to the release namespace)."
    )
    kubernetes_release: str = Field(
        default="jobqueue", pattern=r"^[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?$",
        description="Prefix of every object the manager creates: Deployment `<release>-consumer-<group>`, "
        "Lease `<release>-manager`. Objects also carry the label `jobqueue.io/release`.",
    )
    kubernetes_consumer_image: str | None = Field(
        default=None, description="Consumer image for groups that set none (the chart passes its own image)."
    )
    kubeconfig: Path | None = Field(
        default=None, description="Kubeconfig for the Kubernetes backend; unset: the in-cluster service account."
    )
    kubernetes_lease_seconds: int = Field(
        default=15, ge=2, description="Leader Lease duration: a standby manager takes over this long after the "
        "leader stops renewing. Renewal deadline is 2/3 of it, retries every 1/5 (at least 1 s).",
    )
    kubernetes_request_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Timeout of one Kubernetes API call (retried with backoff), so a hung API "
        "server cannot stall the manager's loop.",
    )
    kubernetes_busy_deletion_cost: int = Field(
        default=1_000_000, ge=1, description="`controller.kubernetes.io/pod-deletion-cost` put on a busy consumer's "
        "pod before a scale-down (idle pods get 0), so the ReplicaSet removes idle pods first.",
    )
    pod_name: str | None = Field(
        default=None, description="This manager's identity for leader election (the chart sets it from the pod "
        "name). Default `<hostname>-<pid>`.",
    )
    # --- the profiling daemon (`jobqueue profiler`; field names after the reference `perf_collector`) ---
    profiler_perf_polling_frequency_hz: int = Field(
        default=99, ge=1, le=10_000, description="Samples per second per CPU (99 avoids aliasing with timer ticks).")
    profiler_call_graph: bool = Field(default=True, description="Record call stacks (`perf record -g`), not "
                                      "only the sampled function.")
    profiler_dump_duration_seconds: int = Field(
        default=60, ge=1, description="Length of one capture; each becomes one file and the next one starts.")
    profiler_max_dumps_retained: int = Field(
        default=10, ge=1, description="Dumps kept on local disk (uploaded or not); older ones are deleted first.")
    profiler_export_to: str | None = Field(
        default=None, pattern=r"^(s3|gs)://[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]/?$",
        description="`s3://bucket` or `gs://bucket` to upload dumps to; unset: keep them local only.")
    profiler_bucket_subdirectory: str = Field(
        default="profiles", pattern=r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$",
        description="Key prefix: dumps go to `<subdirectory>/<node>/<UTC timestamp>-perf-data.gz`.")
    profiler_collector: Literal["auto", "perf", "py-spy"] = Field(
        default="auto", description="`auto`: Linux perf where it is permitted, else py-spy.")
    profiler_directory: Path | None = Field(default=None, description="Local dump directory (default "
                                            "`<home>/profiles`).")
    profiler_min_free_bytes: ByteSize = Field(
        default=256 << 20, ge=0, description="Below this much free space in the dump directory the daemon stops "
        "capturing and warns, and resumes when space is back.")
    node_name: str | None = Field(default=None, description="This node's name in object keys (the chart sets it "
                                  "from `spec.nodeName`). Default: the hostname.")
    log_format: Literal["auto", "json", "console"] = Field(
        default="auto", description="`json` for production, `console` for a terminal, `auto` picks by TTY."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(default="info", description="Log level.")

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as e:  # pydantic's message would quote inputs, secrets among them
            raise settings_error(e, Settings.model_fields, ENV_PREFIX) from None

    @field_validator("environment")
    @classmethod
    def _check_environment(cls, v: str) -> str:
        if not _ENVIRONMENT_RE.match(v):
            raise ValueError(
                "JOBQUEUE_ENVIRONMENT must be 1-63 chars of lowercase letters, digits, '-' or '_', "
                f"starting with a letter or digit; got {v!r}"
            )
        return v

    @model_validator(mode="after")
    def _check_paths(self) -> Settings:
        for name in ("registry_path", "resource_groups_path", "schedules_path"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"JOBQUEUE_{name.upper()}: file {path} does not exist")
        return self

    @field_validator("quota_team_overrides", mode="before")
    @classmethod
    def _json_overrides(cls, v: Any) -> Any:
        """JSON text given as a value (from `to_env`), as the environment gives it."""
        return json.loads(v) if isinstance(v, str) else v

    @model_validator(mode="after")
    def _check_oidc(self) -> Settings:
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

    @cached_property
    def key_prefix(self) -> str:
        return Keys.for_environment(self.environment).prefix

    @property
    def staging(self) -> str:
        return self.staging_uri or str(self.home / "staging")

    @property
    def results(self) -> str:
        return self.results_uri or str(self.home / "results")

    @property
    def result_ttl(self) -> int:
        return self.result_ttl_seconds or self.job_ttl_seconds

    @property
    def spill_root(self) -> Path:
        return self.spill_directory or self.home / "spill"

    @property
    def scan_cache_root(self) -> Path:
        base = self.table_scan_cache_directory or self.spill_root / "table_scan_cache"
        return base / f"slot-{self.consumer_slot}" if self.consumer_slot else base

    @property
    def spill_ledger_root(self) -> Path:
        return self.spill_ledger_directory or self.home / "ledger"

    @property
    def embedded_redis_url_file(self) -> Path:
        return self.home / "redis.url"

    @property
    def api_url_file(self) -> Path:
        """Where `jobqueue up` records the URL of the API it started (next to `redis.url`)."""
        return self.home / "api.url"

    @property
    def api_token_file(self) -> Path:
        """The local admin token a running `jobqueue up` wrote (0600) for clients of its API on this machine."""
        return self.home / "api.token"

    def recorded_api_url(self) -> str | None:
        """The URL of the API a running `jobqueue up` recorded under the home, if any."""
        try:
            return self.api_url_file.read_text().strip() or None
        except FileNotFoundError:
            return None

    def to_env(self) -> dict[str, str]:
        """These settings as `JOBQUEUE_*` variables, for child processes (Redis URL resolved)."""
        env = {}
        for name in Settings.model_fields:
            value = getattr(self, name)
            if value is not None and name not in ("consumer_id", "consumer_slot"):
                if isinstance(value, SecretStr):
                    value = value.get_secret_value()
                elif isinstance(value, dict):  # a JSON setting (JOBQUEUE_QUOTA_TEAM_OVERRIDES)
                    value = json.dumps(to_jsonable_python(value, exclude_none=True))
                env[ENV_PREFIX + name.upper()] = str(value).lower() if isinstance(value, bool) else str(value)
        env["JOBQUEUE_REDIS_URL"] = self.resolved_redis_url()
        return env

    @property
    def profiler_root(self) -> Path:
        return self.profiler_directory or self.home / "profiles"

    def resolved_redis_url(self) -> str:
        """The Redis URL: the setting, else the URL a running `jobqueue up` recorded in `<home>/redis.url`.

        Neither: `NoServerError`, before any connection. There is no default address: on a shared host
        `127.0.0.1:6379` is somebody else's Redis, and jobs sent there would wait forever.
        """
        if self.redis_url:
            return self.redis_url
        url = self.embedded_url()
        if url is None:
            raise NoServerError(
                "no jobqueue server: start one with `jobqueue up` (it records its address in "
                f"{self.embedded_redis_url_file}), or set JOBQUEUE_REDIS_URL to your Redis",
                ("JOBQUEUE_REDIS_URL",),
            )
        return url

    def embedded_url(self) -> str | None:
        """The URL of the embedded server a running `jobqueue up` recorded under the home, if any."""
        try:
            return self.embedded_redis_url_file.read_text().strip() or None
        except FileNotFoundError:
            return None


def known_variables() -> set[str]:
    names = {"JOBQUEUE_ENV_FILE"}
    for name, field in Settings.model_fields.items():
        names.add(ENV_PREFIX + name.upper())
        if isinstance(field.validation_alias, AliasChoices):
            names.update(str(c) for c in field.validation_alias.choices)
    return names


class UnknownSettingError(SettingsError):
    pass


def load_settings() -> Settings:
    """Read settings; a bad value raises `SettingsError` naming the variable (and no secret).

    Unknown `JOBQUEUE_*` variables raise `UnknownSettingError`: a typo must not be silently ignored.
    """
    known = known_variables()
    unknown = sorted(k for k in os.environ if k.startswith(ENV_PREFIX) and k not in known)
    try:
        settings = Settings()
    except SettingsError as e:  # reported together with the unknown names: every mistake at once
        if not unknown:
            raise
        raise UnknownSettingError(f"{_unknown_message(unknown, known)}; {e}", (*unknown, *e.variables)) from None
    if unknown:
        raise UnknownSettingError(_unknown_message(unknown, known) + "; run `jobqueue settings` for the valid names",
                                  tuple(unknown))
    return settings


def _unknown_message(unknown: list[str], known: set[str]) -> str:
    return "unknown setting(s) " + ", ".join(f"{k}{did_you_mean(k, known)}" for k in unknown)


def settings_reference() -> list[tuple[str, str, str]]:
    """(variable names, default, description) for every setting: the documentation table."""
    rows = []
    for name, field in Settings.model_fields.items():
        if isinstance(field.validation_alias, AliasChoices):
            env = " / ".join(str(c) for c in field.validation_alias.choices)
        else:
            env = ENV_PREFIX + name.upper()
        default = "~/.jobqueue" if name == "home" else repr(field.default)
        rows.append((env, default, field.description or ""))
    return rows
