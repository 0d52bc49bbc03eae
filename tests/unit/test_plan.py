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
    assert 'i."user.id" = s0.__k AND i.__ts__ >= s0.__t' in plan.sql
    assert plan.sql.rstrip().endswith("ORDER BY i.__row__")
    assert plan.joins[0].source.path == "/data/p"  # relative paths resolve against the registry file
    # key pruning: the source side is cut to keys the input holds before the ASOF join sorts it
    assert 'WITH __keys_0 AS (SELECT DISTINCT "user.id" AS k FROM input)' in plan.sql
    assert 'FROM src_profile AS src SEMI JOIN __keys_0 ON src."uid" = __keys_0.k' in plan.sql


def test_the_input_time_column_is_opt_in_and_holds_each_rows_as_of_time():
    default = plan_query(["user.id"], ["user.age"], REGISTRY)
    assert INPUT_TIME_COLUMN not in default.output_columns and INPUT_TIME_COLUMN not in default.sql
    plan = plan_query(["user.id"], ["user.age", "user.logins"], REGISTRY, include_input_time=True)
    assert INPUT_TIME_COLUMN == "input_time"
    assert plan.output_columns == ("user.id", "input_time", "user.age", "user.logins")  # after the input columns
    assert 'SELECT i."user.id" AS "user.id", i.__ts__ AS "input_time", s0."age" AS "user.age"' in plan.sql
    assert 'i.__ts__ AS "input_time"' in plan.unordered_sql  # the out-of-memory fallback keeps it
    assert '"input_time"' in reorder_sql("u.parquet", plan.output_columns)
    # the column can never shadow an input column: those are 'namespace.feature'
    with pytest.raises(InvalidQueryError, match="'input_time' is not 'namespace.feature'"):
        plan_query(["user.id", "input_time"], ["user.age"], REGISTRY, include_input_time=True)


def test_the_out_of_memory_fallback_sql_leaves_the_order_to_a_second_pass_through_row():
    plan = plan_query(["user.id"], ["user.age", "user.logins"], REGISTRY)
    assert "ORDER BY" not in plan.unordered_sql
    select, _, rest = plan.sql.partition("\nFROM input AS i")
    assert plan.unordered_sql == f"{select}, i.__row__ AS __row__\nFROM input AS i{rest.rsplit(chr(10), 1)[0]}"
    again = reorder_sql("/spill/q-1/unordered.parquet", plan.output_columns)
    assert again == ('SELECT "user.id", "user.age", "user.logins" FROM read_parquet(\'/spill/q-1/unordered.parquet\') '
                     "ORDER BY __row__")


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
    assert "<= i.__ts__" in plan.sql  # never past the input time
    assert plan.sql.count("ASOF LEFT JOIN") == 1  # the latest-value feature of the same source
