"""Resource groups: named consumer pools, each with its own queue, scale bounds and engine limits.

Loaded from YAML (`JOBQUEUE_RESOURCE_GROUPS_PATH`). A `default` group always exists.

    resource_groups:
      default: {min_instances: 0, max_instances: 2}
      big:
        min_instances: 0
        max_instances: 4
        jobs_per_consumer: 1
        memory: 8GiB                  # the container memory limit a consumer gets
        memory_limit_percent: 75      # DuckDB memory_limit = 75% of it
        spill_directory: /mnt/nvme/spill
        threads: 4
        env: {JOBQUEUE_LOG_LEVEL: debug}
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from jobqueue.errors import ConfigError
from jobqueue.sizes import parse_bytes

DEFAULT_GROUP = "default"
_GROUP_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")


class ResourceGroup(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    min_instances: int = Field(default=0, ge=0)
    max_instances: int = Field(default=1, ge=0)
    jobs_per_consumer: int = Field(default=1, ge=1, description="Concurrent queries per consumer.")
    memory: Annotated[int | None, BeforeValidator(parse_bytes)] = Field(default=None, gt=0)
    memory_limit_percent: float | None = Field(default=None, gt=0, le=100)
    spill_directory: str | None = None
    threads: int | None = Field(default=None, gt=0)
    env: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> ResourceGroup:
        if not _GROUP_NAME_RE.match(self.name):
            raise ValueError(
                f"group name {self.name!r} must be lowercase letters, digits and '-', at most 40 chars "
                "(it names a Kubernetes Deployment)"
            )
        if self.min_instances > self.max_instances:
            raise ValueError(
                f"min_instances ({self.min_instances}) is above max_instances ({self.max_instances})"
            )
        return self

    def consumer_env(self) -> dict[str, str]:
        """Settings a consumer of this group runs with, on top of the manager's own."""
        env: dict[str, str] = {}
        if self.memory is not None:
            env["JOBQUEUE_CONTAINER_MEMORY_BYTES"] = str(self.memory)
        if self.memory_limit_percent is not None:
            env["JOBQUEUE_QUERY_MEMORY_LIMIT_PERCENT"] = str(self.memory_limit_percent)
        if self.spill_directory is not None:
            env["JOBQUEUE_SPILL_DIRECTORY"] = self.spill_directory
        if self.threads is not None:
            env["JOBQUEUE_QUERY_THREADS"] = str(self.threads)
        env.update(self.env)
        return env


def parse_groups(data: object, source: str = "<resource groups>") -> dict[str, ResourceGroup]:
    """Validate a parsed YAML document into groups; always includes `default`."""
    if data is None:
        data = {}
    if not isinstance(data, dict) or not isinstance(data.get("resource_groups", {}), dict):
        raise ConfigError(f"{source}: expected a mapping with key 'resource_groups: {{name: {{...}}}}'")
    extra = set(data) - {"resource_groups"}
    if extra:
        raise ConfigError(f"{source}: unknown top-level key(s) {sorted(extra)}; only 'resource_groups'")
    groups: dict[str, ResourceGroup] = {}
    for name, body in (data.get("resource_groups") or {}).items():
        try:
            groups[str(name)] = ResourceGroup.model_validate({"name": str(name), **(body or {})})
        except ValidationError as e:
            raise ConfigError(f"{source}: resource group {name!r}: {_first_error(e)}") from e
        except TypeError as e:
            raise ConfigError(f"{source}: resource group {name!r} must be a mapping") from e
    groups.setdefault(DEFAULT_GROUP, ResourceGroup(name=DEFAULT_GROUP))
    return groups


def load_groups(path: Path | None) -> dict[str, ResourceGroup]:
    if path is None:
        return parse_groups(None)
    try:
        data = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    return parse_groups(data, str(path))


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    return f"{loc}: {err['msg']}" if loc else err["msg"]
