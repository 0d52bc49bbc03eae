"""The query plan: (input columns, requested outputs, registry) -> checked request -> DuckDB SQL.

Pure functions, no I/O. The SQL reads two kinds of relations that the engine provides:
`input` (the staged input, with `__ts__` and `__row__`) and one `src_<source>` per feature source.
Point-in-time semantics, never looking past each row's time `t = __ts__`:
- a feature takes the latest source row with `ts <= t` (DuckDB `ASOF LEFT JOIN`), null when none;
- a windowed aggregation covers the rows with `t - window < ts <= t` (counts are 0 when empty,
  other functions null).
Rows come back in input order (a shard's in any order, with `__row__`: `keep_row`). With `include_input_time`,
the result also has `input_time`: the `t` each row was answered as of (after the input columns), so a
point-in-time answer can be audited.
`QueryPlan.unordered_sql` is the same query without the final sort and with `__row__` kept, for an engine
that restores the order itself (its out-of-memory fallback).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from jobqueue.errors import InvalidQueryError
from jobqueue.registry import FeatureSource, Namespace, Registry

TS_COLUMN = "__ts__"
ROW_COLUMN = "__row__"
INPUT_TIME_COLUMN = "input_time"  # the opt-in result column; never an input's (those are 'namespace.feature')


def utc(column: str) -> str:
    """An input time (a TIMESTAMPTZ) as the sources' times are compared: a TIMESTAMP in UTC (`source_time`).

    From its microseconds (`epoch_us`), not by a cast: DuckDB's cast between TIMESTAMPTZ and TIMESTAMP goes
    through ICU's calendar, ~50 ns a row (146 vs 7 ms for 3M rows). The same values; an infinity (which has no
    microseconds) takes the cast, and DuckDB evaluates a CASE branch only for its rows."""
    return (f"CASE WHEN isfinite({column}) THEN make_timestamp(epoch_us({column})) "
            f"ELSE CAST({column} AS TIMESTAMP) END")


def utc_source_time(column: str, column_type: str) -> str | None:
    """A source's time column of a type with a time zone as its UTC wall time, without ICU's cast (`utc`), for
    the engine to put in the source's relation; None when `column_type` has no time zone (nothing to convert).

    TIMESTAMPTZ: `utc`, 25 vs 430 ms per 10M rows. TIMESTAMPTZ_NS: from its nanoseconds to a TIMESTAMP_NS, 22 vs
    490 ms (and `source_time`'s sub-microsecond test on it then takes no ICU either). Its infinities become null
    (they have no nanoseconds), which `source_time` makes of a TIMESTAMP_NS infinity anyway."""
    if column_type == "TIMESTAMP WITH TIME ZONE":
        return utc(column)
    if column_type == "TIMESTAMPTZ_NS":
        return f"make_timestamp_ns(epoch_ns({column}))"
    return None


# The input as the joins read it: `input` with its time replaced by the UTC TIMESTAMP (`utc`), made once a row.
# Replaced, not added beside it, and not in each join's condition: either way each ASOF join's sort carried a
# second time column (with the cast in each join, a 1.5M-row input at a 96 MiB limit spilled 250-260 MiB and took
# 2.5-3.2 s; read from here, 224-236 MiB and 1.9-2.6 s). NOT MATERIALIZED: each reader (the joins, the key
# pruning, aggregations) streams it.
JOIN_INPUT = "__input"
JOIN_INPUT_CTE = f"{JOIN_INPUT} AS NOT MATERIALIZED (SELECT * REPLACE ({utc(TS_COLUMN)} AS {TS_COLUMN}) FROM input)"
INPUT_TIME = f"i.{TS_COLUMN}"  # an input row's time in a query over JOIN_INPUT


@dataclass(frozen=True)
class SourceJoin:
    """What a query reads from one source: latest values and/or windowed aggregations."""

    namespace: Namespace
    source: FeatureSource
    features: tuple[str, ...]  # latest-value features (names without namespace)
    aggregations: tuple[str, ...] = ()  # windowed aggregation features

    @property
    def relation(self) -> str:
        return f"src_{self.source.name}"


@dataclass(frozen=True)
class QueryPlan:
    sql: str
    joins: tuple[SourceJoin, ...]
    output_columns: tuple[str, ...]
    registry_origin: str = "<registry>"
    unordered_sql: str = ""  # `sql` without ORDER BY, plus the input's `__row__` as the last column
    in_input_order: bool = True  # False: a shard's `sql` has no ORDER BY (its `__row__` orders the merged shards)


def quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def literal(text: str) -> str:
    """A SQL string literal (file paths in read_parquet / COPY)."""
    return "'" + text.replace("'", "''") + "'"


def _split(feature: str) -> tuple[str, str]:
    ns, dot, name = feature.partition(".")
    return ns, (name if dot else "")


def check_output(output: Sequence[str], registry: Registry) -> list[Namespace]:
    """Every output must be a known `namespace.feature`; returns the namespaces, in first-use order."""
    if not output:
        raise InvalidQueryError("output", "is empty; name at least one feature such as 'user.age'")
    known = ", ".join(sorted(registry.namespaces)) or "(none: the registry is empty)"
    namespaces: dict[str, Namespace] = {}
    for i, feature in enumerate(output):
        ns_name, name = _split(feature)
        ns = registry.namespaces.get(ns_name)
        if ns is None or not name:
            raise InvalidQueryError(
                f"output[{i}]",
                f"unknown namespace in {feature!r}; write 'namespace.feature' with a namespace from: {known}",
            )
        if name != ns.primary_key and ns.source_of(name) is None:
            raise InvalidQueryError(
                f"output[{i}]",
                f"unknown feature {feature!r}; namespace {ns.name!r} has: {', '.join(ns.feature_names())}",
            )
        namespaces.setdefault(ns.name, ns)
    return list(namespaces.values())


def check_input_columns(input_columns: Sequence[str], namespaces: list[Namespace], registry: Registry) -> None:
    """The input must hold the primary key of every output namespace (the join path)."""
    for col in input_columns:
        if col in (TS_COLUMN, ROW_COLUMN):
            raise InvalidQueryError("input", f"column name {col!r} is reserved; rename it")
        ns_name, name = _split(col)
        if ns_name not in registry.namespaces or not name:
            known = ", ".join(sorted(registry.namespaces))
            raise InvalidQueryError(
                "input", f"column {col!r} is not 'namespace.feature' for a known namespace ({known})"
            )
    missing = [ns for ns in namespaces if ns.key_feature not in input_columns]
    if not missing:
        return
    if len(namespaces) == 1:
        ns = missing[0]
        raise InvalidQueryError(
            "input", f"is missing the primary key {ns.key_feature!r} of namespace {ns.name!r}; add that column"
        )
    names = ", ".join(repr(ns.name) for ns in namespaces)
    keys = ", ".join(repr(ns.key_feature) for ns in missing)
    raise InvalidQueryError(
        "output",
        f"spans namespaces {names} with no join path: the input has no {keys}; "
        "add those key columns to the input or split the query per namespace",
    )


def plan_query(input_columns: Sequence[str], output: Sequence[str], registry: Registry, *,
               include_input_time: bool = False, keep_row: bool = False) -> QueryPlan:
    """Check the request against the registry and build the point-in-time SQL. `include_input_time` adds the
    `input_time` column (each row's as-of time) after the input columns; `keep_row` keeps `__row__` as the last
    column (a shard's result: the reader merges shards by it), and then the rows need no order of their own: `sql`
    has no ORDER BY (`in_input_order` False), which spares the engine a sort of the whole result."""
    namespaces = check_output(output, registry)
    check_input_columns(input_columns, namespaces, registry)
    joins = _group_by_source(output, registry)
    as_of = [INPUT_TIME_COLUMN] if include_input_time else []
    output_columns = tuple(dict.fromkeys([*input_columns, *as_of, *output, *([ROW_COLUMN] if keep_row else [])]))
    exprs = {c: f"i.{quote(c)}" for c in input_columns}
    if keep_row:
        exprs[ROW_COLUMN] = f"i.{ROW_COLUMN}"
    if include_input_time:  # the time as given, a TIMESTAMPTZ (JOIN_INPUT's is a TIMESTAMP)
        exprs[INPUT_TIME_COLUMN] = f"CAST(i.{TS_COLUMN} AS TIMESTAMPTZ)" if joins else f"i.{TS_COLUMN}"
    keys: dict[str, str] = {}  # namespace -> CTE of the distinct keys the input asks for
    ctes: list[str] = []
    from_clause = [f"FROM {JOIN_INPUT if joins else 'input'} AS i"]
    for n, join in enumerate(joins):
        ns = join.namespace
        if join.features:
            keys.setdefault(ns.name, f"__keys_{len(keys)}")
            from_clause.append(_asof_join(join, f"s{n}", keys[ns.name]))
            for f in join.features:
                exprs.setdefault(f"{ns.name}.{f}", f"s{n}.{quote(f)}")
        if join.aggregations:
            ctes.append(_aggregate_cte(join, f"__agg_{n}"))
            from_clause.append(f"LEFT JOIN __agg_{n} AS a{n} ON a{n}.{ROW_COLUMN} = i.{ROW_COLUMN}")
            for f in join.aggregations:
                col = f"a{n}.{quote(f)}"
                counts = join.source.aggregations[f].function in ("count", "count_distinct")
                exprs.setdefault(f"{ns.name}.{f}", f"coalesce({col}, 0)" if counts else col)
    ctes = [
        f"{cte} AS (SELECT {quote(registry.namespaces[ns].key_feature)} AS k, max({TS_COLUMN}) AS m "
        f"FROM {JOIN_INPUT} GROUP BY ALL)"
        for ns, cte in keys.items()
    ] + ctes
    if joins:
        ctes.insert(0, JOIN_INPUT_CTE)
    select = ", ".join(f"{exprs[c]} AS {quote(c)}" for c in output_columns)
    head = (f"WITH {', '.join(ctes)}\n" if ctes else "") + "SELECT "
    body = "\n" + "\n".join(from_clause)
    return QueryPlan(
        sql=f"{head}{select}{body}" if keep_row else f"{head}{select}{body}\nORDER BY i.{ROW_COLUMN}",
        in_input_order=not keep_row,
        unordered_sql=f"{head}{select}{body}" if keep_row else f"{head}{select}, i.{ROW_COLUMN} AS {ROW_COLUMN}{body}",
        joins=joins, output_columns=output_columns, registry_origin=registry.origin,
    )


def reorder_sql(unordered_parquet: str, output_columns: Sequence[str]) -> str:
    """Read a result written from `unordered_sql` back in input order, without `__row__`."""
    select = ", ".join(quote(c) for c in output_columns)
    return f"SELECT {select} FROM read_parquet({literal(unordered_parquet)}) ORDER BY {ROW_COLUMN}"


def _group_by_source(output: Sequence[str], registry: Registry) -> tuple[SourceJoin, ...]:
    by_source: dict[str, SourceJoin] = {}
    for feature in output:
        ns_name, name = _split(feature)
        ns = registry.namespaces[ns_name]
        src = ns.source_of(name)
        if name == ns.primary_key or src is None:
            continue
        join = by_source.get(src.name) or SourceJoin(ns, src, (), ())
        if name in src.features and name not in join.features:
            join = SourceJoin(ns, src, (*join.features, name), join.aggregations)
        elif name in src.aggregations and name not in join.aggregations:
            join = SourceJoin(ns, src, join.features, (*join.aggregations, name))
        by_source[src.name] = join
    return tuple(by_source.values())


def _asof_join(join: SourceJoin, alias: str, keys_cte: str) -> str:
    """Latest value per key as of each input time. Pruning: only source rows whose key is in the input can
    match, and none later than that key's latest input time (`keys_cte`'s `m`), so the ASOF join sorts those
    alone (~20% faster at 20M rows, far more for small inputs; the time bound: 12.5M -> ~8M rows sorted for
    bench/sharded.py's random input times, peak RSS 1195 -> 750 MiB unsharded).

    `WHERE key IS NOT NULL` changes no row (a null key matches no input key) but DuckDB then estimates the
    pruned side at a fraction of the source instead of all of it, and sizes the ASOF join's hash partitions from
    that estimate: partitions sized for the whole source, when a shard's input asks for a fraction of its keys,
    left most of them near empty and cost a shard's sort ~60% more memory per row (123 vs 78 B/row measured at
    20M source rows, 4 shards)."""
    src = join.source
    key = f"src.{quote(src.key)}"
    names = [quote(f) for f in join.features]
    cols = [f"src.{quote(src.features[f])} AS {name}" for f, name in zip(join.features, names, strict=True)]
    sub = (
        f"SELECT __k, __t, {', '.join(names)} FROM (SELECT {key} AS __k, "
        f"{source_time(f'src.{quote(src.timestamp)}')} AS __t, {', '.join(cols)}, {keys_cte}.m AS __m "
        f"FROM {join.relation} AS src JOIN {keys_cte} ON {key} = {keys_cte}.k WHERE {key} IS NOT NULL) "
        "WHERE __t <= __m"
    )
    return (
        f"ASOF LEFT JOIN ({sub}) AS {alias}\n"
        f"  ON i.{quote(join.namespace.key_feature)} = {alias}.__k AND {INPUT_TIME} >= {alias}.__t"
    )


def source_time(column: str) -> str:
    """A source timestamp as a microsecond TIMESTAMP in UTC (as the input's, `JOIN_INPUT`), rounded UP to the
    microsecond.

    Input times are whole microseconds; DuckDB's cast of a nanosecond timestamp rounds to the
    nearest one, so a row at 10:00:00.000000400 became 10:00:00 and matched an input at 10:00:00,
    400 ns before it happened. Rounded up, `ts <= t` and `ts > t - window` give for every
    microsecond `t` exactly what they give at full precision. Only rows with a sub-microsecond
    part take the nanosecond branch (DuckDB evaluates a CASE branch only for its rows), so
    microsecond, millisecond, second and date columns keep their whole range; a time without a
    microsecond (infinity) is null, as it always was.

    A TIMESTAMP, not a TIMESTAMPTZ: the connection is in UTC, where both hold the same microseconds, and the
    cast of a TIMESTAMP source column to TIMESTAMPTZ goes through ICU's calendar, ~120 ns a row (about a tenth
    of a query's CPU at 20M source rows); the input's time is converted the other way instead, once a row
    (`JOIN_INPUT`). A source column with a time zone reaches here as its UTC wall time already
    (`utc_source_time`, applied where the engine attaches the source), so it takes no ICU cast either.
    """
    ns = f"epoch_ns(CAST({column} AS TIMESTAMPTZ_NS))"
    return (f"CASE WHEN nanosecond({column}) % 1000 = 0 THEN CAST({column} AS TIMESTAMP) "
            f"ELSE make_timestamp({ns} // 1000 + CAST({ns} % 1000 > 0 AS BIGINT)) END")


_AGG_SQL = {"sum": "sum({})", "count": "count({})", "mean": "avg({})", "min": "min({})", "max": "max({})",
            "count_distinct": "count(DISTINCT {})"}


def _aggregate_cte(join: SourceJoin, name: str) -> str:
    """Windowed aggregations per input row over source rows with `t - window < ts <= t`.

    One range join per source, bounded by its widest window; each feature filters its own window.
    """
    src = join.source
    widest = max(src.aggregations[f].window_seconds for f in join.aggregations)
    items = []
    for f in join.aggregations:
        agg = src.aggregations[f]
        arg = f"e.{quote(agg.column)}" if agg.column else "*"
        items.append(
            f"{_AGG_SQL[agg.function].format(arg)} FILTER (WHERE e.__t > {INPUT_TIME} - "
            f"INTERVAL '{agg.window_seconds} seconds') AS {quote(f)}"
        )
    columns = dict.fromkeys(f"src.{quote(column)}" for f in join.aggregations
                            if (column := src.aggregations[f].column))
    events = (f"SELECT src.{quote(src.key)} AS __k, {source_time(f'src.{quote(src.timestamp)}')} AS __t"
              f"{''.join(', ' + c for c in columns)} FROM {join.relation} AS src")
    return (
        f"{name} AS (SELECT i.{ROW_COLUMN} AS {ROW_COLUMN}, {', '.join(items)}\n"
        f"  FROM {JOIN_INPUT} AS i JOIN ({events}) AS e ON e.__k = i.{quote(join.namespace.key_feature)}"
        f" AND e.__t <= {INPUT_TIME} AND e.__t > {INPUT_TIME} - INTERVAL '{widest} seconds'\n"
        f"  GROUP BY i.{ROW_COLUMN})"
    )
