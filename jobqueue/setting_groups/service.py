"""Where the service is: the environment (the Redis key prefix), Redis, local state, storage, the config files;
and how every process logs."""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings

from jobqueue.errors import NoServerError
from jobqueue.keys import Keys

_ENVIRONMENT_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def _default_home() -> Path:
    return Path.home() / ".jobqueue"


class ServiceSettings(BaseSettings):
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
    def _check_paths(self) -> ServiceSettings:
        for name in ("registry_path", "resource_groups_path", "schedules_path"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"JOBQUEUE_{name.upper()}: file {path} does not exist")
        return self

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


class LogSettings(BaseSettings):
    log_format: Literal["auto", "json", "console"] = Field(
        default="auto", description="`json` for production, `console` for a terminal, `auto` picks by TTY."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(default="info", description="Log level.")
