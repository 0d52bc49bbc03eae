"""Resource-group and registry files: valid ones load, broken ones name the place and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobqueue.errors import ConfigError
from jobqueue.groups import load_groups, parse_groups
from jobqueue.registry import parse_registry


def test_default_group_always_exists():
    assert list(parse_groups(None)) == ["default"]
    big = {"max_instances": 3, "memory": "2GiB", "memory_limit_percent": 50}
    groups = parse_groups({"resource_groups": {"big": big}})
    assert set(groups) == {"big", "default"}
    assert groups["big"].consumer_env() == {
        "JOBQUEUE_CONTAINER_MEMORY_BYTES": str(2 << 30), "JOBQUEUE_QUERY_MEMORY_LIMIT_PERCENT": "50.0",
    }


@pytest.mark.parametrize(
    ("doc", "words"),
    [
        ({"resource_groups": {"a": {"min_instances": 3, "max_instances": 1}}}, ["'a'", "min_instances (3)"]),
        ({"resource_groups": {"a": {"max_instancez": 1}}}, ["'a'", "max_instancez", "Extra inputs"]),
        ({"resource_groups": {"Bad_Name": {}}}, ["lowercase"]),
        ({"resource_groups": {"a": {"memory": "lots"}}}, ["memory", "not a size"]),
        ({"groups": {}}, ["unknown top-level key"]),
        ([1], ["expected a mapping"]),
    ],
)
def test_bad_groups(doc, words):
    with pytest.raises(ConfigError) as info:
        parse_groups(doc, "groups.yaml")
    for w in ["groups.yaml", *words]:
        assert w in str(info.value)


def test_groups_file_with_bad_yaml(tmp_path):
    p = tmp_path / "g.yaml"
    p.write_text("resource_groups: [")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_groups(p)


@pytest.mark.parametrize(
    ("ns", "words"),
    [
        ({"primary_key": "id", "sources": []}, ["'user'", "sources"]),
        ({"primary_key": "id", "sources": [{"name": "s", "path": "p", "key": "k", "timestamp": "t",
                                            "features": ["a"]}, {"name": "s2", "path": "p", "key": "k",
                                            "timestamp": "t", "features": ["a"]}]}, ["defined by both"]),
        ({"primary_key": "id", "sources": [{"name": "s", "path": "p", "key": "k", "timestamp": "t",
                                            "features": ["bad-name"]}]}, ["not a valid identifier"]),
        ({"sources": []}, ["primary_key"]),
    ],
)
def test_bad_registry(ns, words):
    with pytest.raises(ConfigError) as info:
        parse_registry({"namespaces": {"user": ns}}, Path("/"), "reg.yaml")
    for w in ["reg.yaml", *words]:
        assert w in str(info.value)


@pytest.mark.parametrize(
    ("agg", "words"),
    [
        ({"function": "sum", "window": "30d"}, ["needs a 'column'"]),
        ({"function": "sum", "column": "x", "window": "30 days"}, ["window '30 days'", "e.g. 30d"]),
        ({"function": "median", "column": "x", "window": "1d"}, ["function"]),
        ({"function": "count", "window": "0d"}, ["positive"]),
    ],
)
def test_bad_aggregation(agg, words):
    src = {"name": "s", "path": "p", "key": "k", "timestamp": "t", "aggregations": {"a": agg}}
    with pytest.raises(ConfigError) as info:
        parse_registry({"namespaces": {"user": {"primary_key": "id", "sources": [src]}}}, Path("/"), "reg.yaml")
    for w in ["reg.yaml", "'user'", *words]:
        assert w in str(info.value)


def test_group_typos_get_the_nearest_name_and_every_broken_group_is_reported():
    with pytest.raises(ConfigError) as info:
        parse_groups({"resource_groups": {
            "a": {"max_instance": 2, "resources": {"requests": {"memroy": "1Gi"}}},
            "b": {"min_instances": -1},
        }})
    message = str(info.value)
    assert "unknown resource 'memroy' (did you mean `memory`?)" in message, message
    assert "max_instance: Extra inputs are not permitted (did you mean `max_instances`?)" in message, message
    assert "resource group 'b': min_instances" in message, message
