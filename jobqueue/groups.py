"""Resource groups: named consumer pools, each with its own queue, scale bounds, engine limits and pod shape.

Loaded from YAML (`JOBQUEUE_RESOURCE_GROUPS_PATH`). A `default` group always exists. `defaults`
is merged into every group (mappings key by key, the group's own value wins):

    defaults:
      image: ghcr.io/acme/jobqueue:1.4.0
      env_from: [{secretRef: {name: jobqueue-env}}]
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
        # Kubernetes only: the consumer Deployment's pod template
        resources: {requests: {cpu: "4"}, limits: {memory: 8Gi, ephemeral-storage: 200Gi}}
        node_selector: {pool: nvme}
        tolerations: [{key: dedicated, value: queries, effect: NoSchedule}]
        termination_grace_period_seconds: 3600

The manager loads groups leniently (`read_groups_config`): a broken group is reported by name
and left alone while the others run. Everything else (the SDK, the CLI) loads strictly.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from jobqueue.errors import ConfigError
from jobqueue.settings_errors import did_you_mean
from jobqueue.sizes import parse_bytes

DEFAULT_GROUP = "default"
_GROUP_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")
_QUANTITY_RE = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_RESOURCE_NAMES = ("cpu", "memory", "ephemeral-storage")
_MERGED = ("env", "node_selector", "labels", "annotations")
_MERGED_BY_NAME = ("volumes", "volume_mounts")


def _camel(name: str) -> AliasChoices:
    head, *rest = name.split("_")
    return AliasChoices(name, head + "".join(p.title() for p in rest))


def _check_quantities(value: dict[str, str]) -> dict[str, str]:
    for name, quantity in value.items():
        if name not in _RESOURCE_NAMES:
            hint = did_you_mean(str(name), _RESOURCE_NAMES)
            raise ValueError(f"unknown resource {name!r}{hint}; use {', '.join(_RESOURCE_NAMES)}")
        if not _QUANTITY_RE.match(str(quantity)):
            raise ValueError(f"{name}: {quantity!r} is not a Kubernetes quantity (e.g. 500m, 2, 8Gi)")
    return {k: str(v) for k, v in value.items()}


Quantities = Annotated[dict[str, str], BeforeValidator(lambda v: _check_quantities(v or {}))]


class Resources(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    requests: Quantities = Field(default_factory=dict)
    limits: Quantities = Field(default_factory=dict)


class ResourceGroup(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str
    min_instances: int = Field(default=0, ge=0)
    max_instances: int = Field(default=1, ge=0)
    jobs_per_consumer: int = Field(default=1, ge=1, description="Concurrent queries per consumer.")
    memory: Annotated[int | None, BeforeValidator(parse_bytes)] = Field(default=None, gt=0)
    memory_limit_percent: float | None = Field(default=None, gt=0, le=100)
    spill_directory: str | None = None
    threads: int | None = Field(default=None, gt=0)
    env: dict[str, str] = Field(default_factory=dict)
    # Kubernetes: the consumer Deployment's pod template (ignored by the local backend)
    image: str | None = None
    image_pull_policy: str | None = Field(default=None, validation_alias=_camel("image_pull_policy"))
    image_pull_secrets: list[dict[str, Any]] = Field(default_factory=list,
                                                     validation_alias=_camel("image_pull_secrets"))
    resources: Resources = Field(default_factory=Resources)
    node_selector: dict[str, str] = Field(default_factory=dict, validation_alias=_camel("node_selector"))
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    env_from: list[dict[str, Any]] = Field(default_factory=list, validation_alias=_camel("env_from"))
    volumes: list[dict[str, Any]] = Field(default_factory=list)
    volume_mounts: list[dict[str, Any]] = Field(default_factory=list, validation_alias=_camel("volume_mounts"))
    service_account: str | None = Field(default=None, validation_alias=_camel("service_account"))
    termination_grace_period_seconds: int | None = Field(
        default=None, ge=0, validation_alias=_camel("termination_grace_period_seconds"))

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

    def consumer_env(self, emulate_memory: bool = True) -> dict[str, str]:
        """Settings a consumer of this group runs with, on top of the manager's own. On Kubernetes the
        container's cgroup is the memory limit, so `emulate_memory=False` leaves it out."""
        env: dict[str, str] = {}
        if self.memory is not None and emulate_memory:
            env["JOBQUEUE_CONTAINER_MEMORY_BYTES"] = str(self.memory)
        if self.memory_limit_percent is not None:
            env["JOBQUEUE_QUERY_MEMORY_LIMIT_PERCENT"] = str(self.memory_limit_percent)
        if self.spill_directory is not None:
            env["JOBQUEUE_SPILL_DIRECTORY"] = self.spill_directory
        if self.threads is not None:
            env["JOBQUEUE_QUERY_THREADS"] = str(self.threads)
        env.update(self.env)
        return env


@dataclass(frozen=True)
class GroupsConfig:
    """What the manager runs: the valid groups, and each broken group's error by name."""

    groups: dict[str, ResourceGroup]
    errors: dict[str, str] = field(default_factory=dict)


def _snake(body: dict[str, Any]) -> dict[str, Any]:
    """Accept Kubernetes-style camelCase keys (`nodeSelector`) as their snake_case field names."""
    aliases = {choice: name for name, f in ResourceGroup.model_fields.items()
               if isinstance(f.validation_alias, AliasChoices) for choice in f.validation_alias.choices}
    return {aliases.get(k, k): v for k, v in body.items()}


def _merge(defaults: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    defaults, body = _snake(defaults), _snake(body)
    merged = {**defaults, **body}
    for key in _MERGED:
        if isinstance(defaults.get(key), dict) and isinstance(body.get(key), dict):
            merged[key] = {**defaults[key], **body[key]}
    for key in _MERGED_BY_NAME:  # lists of named items: the group's add to the defaults', or replace by name
        if isinstance(defaults.get(key), list) and isinstance(body.get(key), list):
            named = {item.get("name") if isinstance(item, dict) else None for item in body[key]}
            kept = [i for i in defaults[key] if not (isinstance(i, dict) and i.get("name") in named)]
            merged[key] = kept + body[key]
    return merged


def read_groups_config(data: object, source: str = "<resource groups>") -> GroupsConfig:
    """Validate a parsed YAML document; per-group errors are collected, not raised. Always has `default`
    (unless `default` itself is broken). A broken document as a whole raises `ConfigError`."""
    if data is None:
        data = {}
    if not isinstance(data, dict) or not isinstance(data.get("resource_groups", {}), dict):
        raise ConfigError(f"{source}: expected a mapping with key 'resource_groups: {{name: {{...}}}}'")
    extra = set(data) - {"resource_groups", "defaults"}
    if extra:
        raise ConfigError(f"{source}: unknown top-level key(s) {sorted(extra)}; only 'resource_groups', 'defaults'")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ConfigError(f"{source}: 'defaults' must be a mapping of group fields")
    groups: dict[str, ResourceGroup] = {}
    errors: dict[str, str] = {}
    bodies = dict(data.get("resource_groups") or {})
    bodies.setdefault(DEFAULT_GROUP, {})
    for name, body in bodies.items():
        if body is not None and not isinstance(body, dict):
            errors[str(name)] = f"{source}: resource group {name!r} must be a mapping"
            continue
        try:
            groups[str(name)] = ResourceGroup.model_validate({**_merge(defaults, body or {}), "name": str(name)})
        except ValidationError as e:
            errors[str(name)] = f"{source}: resource group {name!r}: {_all_errors(e)}"
    return GroupsConfig(groups, errors)


def parse_groups(data: object, source: str = "<resource groups>") -> dict[str, ResourceGroup]:
    """Strict: the first broken group raises `ConfigError` naming it and the field."""
    config = read_groups_config(data, source)
    if config.errors:
        raise ConfigError("; ".join(config.errors.values()))  # every broken group at once
    return config.groups


def _read_yaml(path: Path) -> object:
    try:
        return yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e


def load_groups(path: Path | None) -> dict[str, ResourceGroup]:
    if path is None:
        return parse_groups(None)
    return parse_groups(_read_yaml(path), str(path))


RECENT_NS = 2_000_000_000
_loaded: dict[Path, tuple[tuple[int, int, int, int], dict[str, ResourceGroup]]] = {}


def load_groups_cached(path: Path | None) -> dict[str, ResourceGroup]:
    """`load_groups`, parsed again only when the file changed (its inode, size, mtime or ctime): a client that
    checks every submission's group against the file (no manager publishes groups) does not parse YAML each
    time."""
    if path is None:
        return load_groups(None)
    try:
        st = path.stat()
    except OSError:
        return load_groups(path)  # its own error, naming the file
    stamp = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    hit = _loaded.get(path)
    if hit is not None and hit[0] == stamp:
        return dict(hit[1])
    groups = load_groups(path)
    if time.time_ns() - st.st_mtime_ns > RECENT_NS:  # a file changed within the clock's resolution again may keep
        _loaded[path] = (stamp, groups)               # its size and times: not kept until it is older (as git does)
    return dict(groups)


def load_groups_config(path: Path | None) -> GroupsConfig:
    if path is None:
        return read_groups_config(None)
    return read_groups_config(_read_yaml(path), str(path))


def _all_errors(e: ValidationError) -> str:
    """Every problem of one group, a misspelt field with the nearest valid name."""
    problems = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden" and len(err["loc"]) == 1:
            msg += did_you_mean(loc, [n for n in ResourceGroup.model_fields if n != "name"])
        problems.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(problems)
