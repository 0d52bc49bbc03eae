"""Check a source's real columns against what the registry says, before the query runs.

A mismatch is a `SourceSchemaError` naming the registry file, the namespace, the source and the
field, instead of a DuckDB binder error about an internal alias.
"""

from __future__ import annotations

from collections.abc import Mapping

from jobqueue.plan import SourceJoin

_NUMERIC = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER",
            "UBIGINT", "FLOAT", "DOUBLE", "DECIMAL")


class SourceSchemaError(ValueError):
    pass


def _is_numeric(t: str) -> bool:
    return t.startswith(_NUMERIC)


def _is_time(t: str) -> bool:
    return t.startswith(("TIMESTAMP", "DATE"))


def check_source(columns: Mapping[str, str], join: SourceJoin, origin: str, input_key_type: str) -> None:
    """`columns`: the source's column names and DuckDB types (`sources.attach_in_utc`)."""
    src, ns = join.source, join.namespace
    where = f"registry {origin}: namespace {ns.name!r}, source {src.name!r} ({src.path or src.table})"

    def column(field: str, name: str) -> str:
        if name not in columns:
            raise SourceSchemaError(
                f"{where}: {field} column {name!r} is not in the data; it has: {', '.join(columns)}"
            )
        return columns[name]

    key_type = column("key", src.key)
    if _is_numeric(key_type) != _is_numeric(input_key_type):
        raise SourceSchemaError(
            f"{where}: key column {src.key!r} is {key_type} but the input's {ns.key_feature!r} is "
            f"{input_key_type}; pass keys of the source's type"
        )
    ts_type = column("timestamp", src.timestamp)
    if not _is_time(ts_type):
        raise SourceSchemaError(f"{where}: timestamp column {src.timestamp!r} is {ts_type}, not a timestamp or date")
    for feature in join.features:
        column(f"feature {feature!r}", src.features[feature])
    for feature in join.aggregations:
        agg = src.aggregations[feature]
        if agg.column is None:
            continue
        agg_type = column(f"aggregation {feature!r}", agg.column)
        if agg.function in ("sum", "mean") and not _is_numeric(agg_type):
            raise SourceSchemaError(f"{where}: aggregation {feature!r} takes the {agg.function} of "
                                    f"{agg.column!r}, which is {agg_type}, not a number")
