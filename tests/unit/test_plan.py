"""The query plan and submit-time validation: request + registry -> SQL or a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobqueue.errors import InvalidQueryError
from jobqueue.plan import INPUT_TIME_COLUMN, plan_query, reorder_sql
from jobqueue.registry import parse_registry

REGISTRY = parse_registry(
    {
        "namespaces": {
            "user": {
                "primary_key": "id",
                "sources": [
                    {"name": "profile", "path": "p", "key": "uid", "timestamp": "ts", "features": ["age", "score"]},
                    {"name": "activity", "path": "a", "key": "uid", "timestamp": "at", "features": {"logins": "n"}},
                ],
            },
            "merchant": {
                "primary_key": "mid",
                "sources": [{"name": "merchants", "path": "m", "key": "id", "timestamp": "ts", "features": ["risk"]}],
            },
        }
    },
    Path("/data"),
)


def test_one_source_one_asof_join_in_input_order():
    plan = plan_query(["user.id"], ["user.age", "user.score"], REGISTRY)
    assert [j.source.name for j in plan.joins] == ["profile"]
    assert plan.output_columns == ("user.id", "user.age", "user.score")
    assert plan.sql.count("ASOF LEFT JOIN") == 1
    # times compare as UTC TIMESTAMPs: the input's made once a row from its microseconds (`utc`, in the `__input`
    # it reads, not in each join: the join's side would carry it as one more column), a source's never through ICU
    assert plan.sql.startswith("WITH __input AS NOT MATERIALIZED (SELECT * REPLACE (CASE WHEN isfinite(__ts__) THEN "
                               "make_timestamp(epoch_us(__ts__)) ELSE CAST(__ts__ AS TIMESTAMP) END AS __ts__) "
                               "FROM input)")
    assert 'i."user.id" = s0.__k AND i.__ts__ >= s0.__t' in plan.sql
    assert 'THEN CAST(src."ts" AS TIMESTAMP) ELSE make_timestamp(' in plan.sql and "AS TIMESTAMPTZ)" not in plan.sql
    assert plan.sql.rstrip().endswith("ORDER BY i.__row__")
    assert plan.joins[0].source.path == "/data/p"  # relative paths resolve against the registry file
    # key pruning: the source side is cut to keys the input holds before the ASOF join sorts it
    # and to rows no later than the key's latest input time, which no input row can look past
    assert '__keys_0 AS (SELECT "user.id" AS k, max(__ts__) AS m FROM __input GROUP BY ALL)' in plan.sql
    # a filter that drops no row that could match, for DuckDB's estimate of the pruned side (see _asof_join)
    pruned = 'FROM src_profile AS src JOIN __keys_0 ON src."uid" = __keys_0.k WHERE src."uid" IS NOT NULL)'
    assert pruned in plan.sql and "__keys_0.m AS __m" in plan.sql and "WHERE __t <= __m) AS s0" in plan.sql


def test_the_input_time_column_is_opt_in_and_holds_each_rows_as_of_time():
    default = plan_query(["user.id"], ["user.age"], REGISTRY)
    assert INPUT_TIME_COLUMN not in default.output_columns and INPUT_TIME_COLUMN not in default.sql
    plan = plan_query(["user.id"], ["user.age", "user.logins"], REGISTRY, include_input_time=True)
    assert INPUT_TIME_COLUMN == "input_time"
    assert plan.output_columns == ("user.id", "input_time", "user.age", "user.logins")  # after the input columns
    # the time as given (a TIMESTAMPTZ): `__input`'s is the UTC TIMESTAMP the joins compare
    assert ('SELECT i."user.id" AS "user.id", CAST(i.__ts__ AS TIMESTAMPTZ) AS "input_time", s0."age" AS "user.age"'
            in plan.sql)
    assert 'CAST(i.__ts__ AS TIMESTAMPTZ) AS "input_time"' in plan.unordered_sql  # the out-of-memory fallback too
    assert '"input_time"' in reorder_sql("u.parquet", plan.output_columns)
    # the column can never shadow an input column: those are 'namespace.feature'
    with pytest.raises(InvalidQueryError, match="'input_time' is not 'namespace.feature'"):
        plan_query(["user.id", "input_time"], ["user.age"], REGISTRY, include_input_time=True)


def test_the_out_of_memory_fallback_sql_leaves_the_order_to_a_second_pass_through_row():
    plan = plan_query(["user.id"], ["user.age", "user.logins"], REGISTRY)
    assert "ORDER BY" not in plan.unordered_sql
    select, _, rest = plan.sql.partition("\nFROM __input AS i")
    assert plan.unordered_sql == f"{select}, i.__row__ AS __row__\nFROM __input AS i{rest.rsplit(chr(10), 1)[0]}"
    again = reorder_sql("/spill/q-1/unordered.parquet", plan.output_columns)
    assert again == ('SELECT "user.id", "user.age", "user.logins" FROM read_parquet(\'/spill/q-1/unordered.parquet\') '
                     "ORDER BY __row__")


def test_a_shards_plan_keeps_row_and_leaves_the_order_to_the_reader():
    """A shard's rows are merged with the other shards' by `__row__` (`sharding.merge_results`): sorting each shard's
    result first was a sort of every row for nothing."""
    whole = plan_query(["user.id"], ["user.age", "user.logins"], REGISTRY)
    shard = plan_query(["user.id"], ["user.age", "user.logins"], REGISTRY, keep_row=True)
    assert whole.in_input_order and not shard.in_input_order
    assert shard.output_columns == (*whole.output_columns, "__row__")
    assert "ORDER BY" not in shard.sql and shard.sql == shard.unordered_sql
    assert shard.sql == whole.unordered_sql.replace("AS __row__", 'AS "__row__"')  # the same query, __row__ last


def test_only_keys_requested_needs_no_join():
    plan = plan_query(["user.id"], ["user.id"], REGISTRY)
    assert plan.joins == () and plan.sql.startswith("SELECT") and "JOIN" not in plan.sql


def test_feature_column_mapping_and_two_namespaces():
    plan = plan_query(["user.id", "merchant.mid"], ["user.logins", "merchant.risk"], REGISTRY)
    assert [j.relation for j in plan.joins] == ["src_activity", "src_merchants"]
    assert '"n" AS "logins"' in plan.sql
    assert plan.output_columns == ("user.id", "merchant.mid", "user.logins", "merchant.risk")


@pytest.mark.parametrize(
    ("columns", "output", "field", "words"),
    [
        (["user.id"], ["usr.age"], "output[0]", ["unknown namespace", "merchant, user"]),
        (["user.id"], ["age"], "output[0]", ["namespace.feature"]),
        (["user.id"], ["user.age", "user.agee"], "output[1]", ["unknown feature 'user.agee'", "age, score, logins"]),
        (["user.age"], ["user.score"], "input", ["primary key 'user.id'"]),
        (["user.id"], ["user.age", "merchant.risk"], "output", ["no join path", "'merchant.mid'"]),
        (["user.id", "foo"], ["user.age"], "input", ["'foo'"]),
        (["user.id", "__ts__"], ["user.age"], "input", ["reserved"]),
        (["user.id"], [], "output", ["empty"]),
    ],
)
def test_bad_requests_name_the_field_and_fix(columns, output, field, words):
    with pytest.raises(InvalidQueryError) as info:
        plan_query(columns, output, REGISTRY)
    assert info.value.field == field
    for word in words:
        assert word in str(info.value)


def test_windowed_aggregations_plan_one_range_join_per_source():
    reg = parse_registry({"namespaces": {"user": {"primary_key": "id", "sources": [
        {"name": "txns", "path": "t", "key": "uid", "timestamp": "ts", "features": {"last_amount": "amount"},
         "aggregations": {"sum_30d": {"function": "sum", "column": "amount", "window": "30d"},
                          "n_7d": {"function": "count", "window": "7d"}}},
    ]}}}, Path("/"))
    plan = plan_query(["user.id"], ["user.sum_30d", "user.n_7d", "user.last_amount"], reg)
    assert len(plan.joins) == 1 and plan.joins[0].aggregations == ("sum_30d", "n_7d")
    assert "INTERVAL '2592000 seconds'" in plan.sql and "INTERVAL '604800 seconds'" in plan.sql
    assert 'coalesce(a0."n_7d", 0)' in plan.sql and 'a0."sum_30d" AS "user.sum_30d"' in plan.sql
    assert "e.__t <= i.__ts__" in plan.sql and "FROM __input AS i JOIN" in plan.sql  # never past the input time
    assert plan.sql.count("ASOF LEFT JOIN") == 1  # the latest-value feature of the same source
