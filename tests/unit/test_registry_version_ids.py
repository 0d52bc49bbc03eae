"""A registry version's document, hash and id: what makes two applies the same version, and how a version is named."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from jobqueue.models import REGISTRY_VERSION_PATTERN
from jobqueue.registry import parse_registry
from jobqueue.registry_versions import RegistryVersion, content_hash, document_of, parse_version_ref

DOC = {"namespaces": {"user": {"primary_key": "id", "sources": [
    {"name": "profile", "path": "profile", "key": "user_id", "timestamp": "ts", "features": ["age", "score"]},
    {"name": "txns", "kind": "iceberg", "table": "db.t", "catalog": {"type": "sql", "uri": "sqlite://"},
     "snapshot_id": 9007199254740993, "key": "user_id", "timestamp": "ts",
     "aggregations": {"n_7d": {"function": "count", "window": "7d"}}},
]}}}


def version(doc: dict, base: str = "/data") -> RegistryVersion:
    return RegistryVersion.of(parse_registry(doc, Path(base), "r.yaml"), datetime.now(UTC), "me")


def test_the_document_is_the_file_form_with_absolute_paths_and_no_defaults():
    doc = version(DOC).document
    profile, txns = doc["namespaces"]["user"]["sources"]
    assert profile == {"name": "profile", "path": "/data/profile", "key": "user_id", "timestamp": "ts",
                       "features": {"age": "age", "score": "score"}}
    assert txns["snapshot_id"] == 9007199254740993 and "path" not in txns
    assert txns["aggregations"] == {"n_7d": {"function": "count", "window": "7d"}}


def test_the_same_meaning_written_differently_has_the_same_hash():
    spelled_out = yaml.safe_load(yaml.safe_dump(DOC))
    src = spelled_out["namespaces"]["user"]["sources"][0]
    src.update(kind="parquet", features={"score": "score", "age": "age"})  # a default written out, another order
    assert version(spelled_out).hash == version(DOC).hash


@pytest.mark.parametrize("change", ["base", "rename"])
def test_other_content_has_another_hash(change):
    other = yaml.safe_load(yaml.safe_dump(DOC))
    if change == "rename":
        other["namespaces"]["user"]["sources"][0]["features"] = {"age": "age", "points": "score"}
    assert version(other, "/elsewhere" if change == "base" else "/data").hash != version(DOC).hash


def test_a_shown_version_applies_back_to_the_same_content():
    v = version(DOC).model_copy(update={"number": 3})
    again = parse_registry(yaml.safe_load(v.to_yaml()), Path("/somewhere/else"), "shown.yaml")
    assert content_hash(document_of(again)) == v.hash
    assert v.registry().origin == f"registry version {v.id} (applied from r.yaml)"
    assert RegistryVersion.from_stored(3, v.stored_json()) == v


def test_version_ids_and_counts():
    v = version(DOC).model_copy(update={"number": 12})
    assert v.id == f"12-{v.hash}" and len(v.hash) == 12
    assert re.match(REGISTRY_VERSION_PATTERN, v.id)
    assert (v.namespace_count, v.feature_count) == (1, 3)
    assert parse_version_ref("12") == (12, None)
    assert parse_version_ref(v.id) == (12, v.hash)
    for bad in ("0", "v3", "3-xyz", "", "3-"):
        with pytest.raises(ValueError, match="is not a registry version"):
            parse_version_ref(bad)
