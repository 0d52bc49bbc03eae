"""Every setting of jobqueue, read from `JOBQUEUE_*` environment variables or an env file.

The fields are declared by group in `jobqueue/setting_groups/` (one module per process or concept); `Settings`
here combines them, and is the one class to import. Each field's description is its documentation: `jobqueue
settings` prints them, and `docs/settings.md` is generated from them.
Unknown `JOBQUEUE_*` variables are rejected, so a misspelt setting fails loudly instead of
being ignored.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, SecretStr, ValidationError
from pydantic_core import to_jsonable_python
from pydantic_settings import BaseSettings, SettingsConfigDict

from jobqueue.errors import SettingsError
from jobqueue.setting_groups import ByteSize
from jobqueue.setting_groups.access import OIDC_ALGORITHMS, AccessSettings
from jobqueue.setting_groups.api import ApiSettings
from jobqueue.setting_groups.client import ClientSettings
from jobqueue.setting_groups.consumer import ConsumerSettings
from jobqueue.setting_groups.manager import ManagerSettings, ScalingSettings
from jobqueue.setting_groups.profiler import ProfilerSettings
from jobqueue.setting_groups.query import QuerySettings
from jobqueue.setting_groups.service import LogSettings, ServiceSettings
from jobqueue.settings_errors import did_you_mean, settings_error

__all__ = ["ENV_PREFIX", "OIDC_ALGORITHMS", "ByteSize", "Settings", "UnknownSettingError", "known_variables",
           "load_settings", "settings_reference"]

ENV_PREFIX = "JOBQUEUE_"


class Settings(  # the groups in reverse: pydantic orders fields from the last base on
    LogSettings, ProfilerSettings, ScalingSettings, ApiSettings, ManagerSettings, ConsumerSettings, AccessSettings,
    ClientSettings, QuerySettings, ServiceSettings, BaseSettings,
):
    """jobqueue settings. Each field reads `JOBQUEUE_<FIELD>` unless its description names aliases."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=os.environ.get("JOBQUEUE_ENV_FILE", ".env"),
        env_file_encoding="utf-8",
        extra="forbid",
        frozen=True,
        populate_by_name=True,
    )

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as e:  # pydantic's message would quote inputs, secrets among them
            raise settings_error(e, Settings.model_fields, ENV_PREFIX) from None

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


def variable_names(name: str) -> tuple[str, ...]:
    """The environment variables that set the setting `name`, in the order they are looked up."""
    alias = Settings.model_fields[name].validation_alias
    if isinstance(alias, AliasChoices):
        return tuple(str(c) for c in alias.choices)
    return (ENV_PREFIX + name.upper(),)


def known_variables() -> set[str]:
    names = {"JOBQUEUE_ENV_FILE"}
    for name in Settings.model_fields:
        names.add(ENV_PREFIX + name.upper())
        names.update(variable_names(name))
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
        env = " / ".join(variable_names(name))
        default = "~/.jobqueue" if name == "home" else repr(field.default)
        rows.append((env, default, field.description or ""))
    return rows
