"""The feature registry: namespaces, their primary keys, and the sources that hold their features.

    namespaces:
      user:
        primary_key: id
        sources:
          - name: user_profile
            kind: parquet
            path: data/user_profile/*.parquet     # file, directory or glob; relative to this file
            key: user_id                          # column matched against `user.id`
            timestamp: ts                         # point-in-time column
            features: [age, score]                # or {feature_name: column_name}
          - name: transactions                    # an event source: windowed aggregations
            path: data/transactions
            key: user_id
            timestamp: ts
            aggregations:
              txn_sum_30d: {function: sum, column: amount, window: 30d}
              txn_count_7d: {function: count, window: 7d}

A feature is addressed as `namespace.feature`; the primary key as `namespace.<primary_key>`.
A windowed aggregation at input time t covers the source rows with `t - window < ts <= t`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from jobqueue.errors import ConfigError

_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_WINDOW_RE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_WINDOW_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
AggregationFunction = Literal["sum", "count", "mean", "min", "max", "count_distinct"]


def parse_window(text: str) -> int:
    """`30d`, `12h`, `15m`, `90s`, `2w` -> seconds."""
    m = _WINDOW_RE.match(str(text))
    if not m or int(m.group(1)) == 0:
        raise ValueError(f"window {text!r} must be a positive whole number with a unit s, m, h, d or w (e.g. 30d)")
    return int(m.group(1)) * _WINDOW_UNITS[m.group(2)]


class Aggregation(_Frozen):
    function: AggregationFunction
    column: str | None = None
    window: str

    @property
    def window_seconds(self) -> int:
        return parse_window(self.window)

    @model_validator(mode="after")
    def _check(self) -> Aggregation:
        parse_window(self.window)
        if self.column is None and self.function != "count":
            raise ValueError(f"function {self.function!r} needs a 'column'")
        return self


class FeatureSource(_Frozen):
    name: str
    kind: Literal["parquet", "iceberg"] = "parquet"
    path: str = Field(default="", description="parquet: a file, directory or glob, local or s3://")
    table: str | None = Field(default=None, description="iceberg: the table identifier, e.g. `db.events`")
    catalog: dict[str, str] | None = Field(
        default=None, description="iceberg: pyiceberg catalog properties, e.g. {type: sql, uri: ..., warehouse: ...}"
    )
    snapshot_id: int | None = Field(default=None, description="iceberg: pin a snapshot (default: current)")
    key: str
    timestamp: str
    features: dict[str, str] = Field(default_factory=dict, description="feature name -> source column")
    aggregations: dict[str, Aggregation] = Field(
        default_factory=dict, description="feature name -> windowed aggregation over this source's rows"
    )

    @model_validator(mode="after")
    def _has_features(self) -> FeatureSource:
        if not self.features and not self.aggregations:
            raise ValueError(f"source {self.name!r} defines no 'features' and no 'aggregations'")
        if self.kind == "parquet" and not self.path:
            raise ValueError(f"parquet source {self.name!r} needs a 'path'")
        if self.kind == "iceberg" and not (self.table and self.catalog):
            raise ValueError(f"iceberg source {self.name!r} needs 'table' and 'catalog'")
        return self

    @field_validator("features", mode="before")
    @classmethod
    def _list_to_mapping(cls, v: object) -> object:
        if isinstance(v, list):
            return {str(f): str(f) for f in v}
        return v

    @field_validator("name")
    @classmethod
    def _ident(cls, v: str) -> str:
        if not _IDENT_RE.match(v):
            raise ValueError(f"source name {v!r} must be an identifier")
        return v


class Namespace(_Frozen):
    name: str
    primary_key: str
    sources: list[FeatureSource] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> Namespace:
        for ident in (self.name, self.primary_key, *self.feature_names()):
            if not _IDENT_RE.match(ident):
                raise ValueError(f"{ident!r} is not a valid identifier (letters, digits, '_')")
        seen: dict[str, str] = {}
        for src in self.sources:
            for feature in [*src.features, *src.aggregations]:
                if feature in seen:
                    raise ValueError(f"feature {feature!r} is defined by both {seen[feature]!r} and {src.name!r}")
                if feature == self.primary_key:
                    raise ValueError(f"feature {feature!r} has the name of the primary key")
                seen[feature] = src.name
        return self

    @property
    def key_feature(self) -> str:
        return f"{self.name}.{self.primary_key}"

    def source_of(self, feature: str) -> FeatureSource | None:
        return next((s for s in self.sources if feature in s.features or feature in s.aggregations), None)

    def feature_names(self) -> list[str]:
        return [f for s in self.sources for f in [*s.features, *s.aggregations]]


class Registry(_Frozen):
    namespaces: dict[str, Namespace] = Field(default_factory=dict)
    origin: str = "<registry>"  # the file it came from, named in errors

    def resolve(self, feature: str) -> tuple[Namespace, FeatureSource] | None:
        ns_name, _, name = feature.partition(".")
        ns = self.namespaces.get(ns_name)
        src = ns.source_of(name) if ns else None
        return (ns, src) if ns and src else None


def parse_registry(data: object, base_dir: Path, source: str = "<registry>") -> Registry:
    """Validate a parsed YAML document; relative local source paths resolve against `base_dir`."""
    if not isinstance(data, dict) or not isinstance(data.get("namespaces"), dict):
        raise ConfigError(f"{source}: expected a mapping with key 'namespaces: {{name: {{...}}}}'")
    namespaces: dict[str, Namespace] = {}
    for name, body in data["namespaces"].items():
        if not isinstance(body, dict):
            raise ConfigError(f"{source}: namespace {name!r} must be a mapping")
        sources = [
            {**s, "path": _absolute(s["path"], base_dir)} if isinstance(s, dict) and s.get("path") else s
            for s in body.get("sources", [])
        ]
        try:
            namespaces[str(name)] = Namespace.model_validate({**body, "name": str(name), "sources": sources})
        except ValidationError as e:
            err = e.errors()[0]
            loc = ".".join(str(p) for p in err["loc"])
            raise ConfigError(f"{source}: namespace {name!r}: {loc}: {err['msg']}") from e
    return Registry(namespaces=namespaces, origin=source)


def load_registry(path: Path | None) -> Registry:
    if path is None:
        return Registry()
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    return parse_registry(data, path.resolve().parent, str(path))


def _absolute(path: str, base_dir: Path) -> str:
    if not path or "://" in path or Path(path).is_absolute():
        return path
    return str(base_dir / path)
