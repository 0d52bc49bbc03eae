"""A job's staging and results folder: one per (environment, job id), whatever the ids look like."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobqueue.models import JOB_ID_PATTERN
from jobqueue.storage import from_path_component, job_uri, path_component

job_ids = st.from_regex(JOB_ID_PATTERN, fullmatch=True).filter(lambda i: ".." not in i)  # `a..b` is refused
environments = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,62}", fullmatch=True)


@given(job_ids, job_ids)
def test_distinct_ids_get_distinct_folders(a, b):
    if a != b:
        assert job_uri("/r", "e", a, "f") != job_uri("/r", "e", b, "f")


@given(job_ids, job_ids)
def test_distinct_ids_get_distinct_folders_on_case_insensitive_file_systems(a, b):
    if a != b:
        assert path_component(a).lower() != path_component(b).lower()
        assert path_component(a) == path_component(a).lower()


@given(environments, job_ids, environments, job_ids)
def test_environments_sharing_a_bucket_get_distinct_folders(e1, a, e2, b):
    if (e1, a) != (e2, b):
        assert job_uri("s3://bucket/staging", e1, a, "input.parquet") != job_uri(
            "s3://bucket/staging", e2, b, "input.parquet")


@given(job_ids)
def test_a_folder_name_decodes_to_its_job_id(job_id):
    assert from_path_component(path_component(job_id)) == job_id


@given(st.text(max_size=50))
def test_a_folder_name_that_is_no_encoding_decodes_to_nothing(name):
    decoded = from_path_component(name)
    assert decoded is None or path_component(decoded) == name


@pytest.mark.parametrize("name", ["vic_7", "%3a", "%3Avic", "VIC", "%zz", "%ff"])
def test_foreign_folder_names(name):
    assert from_path_component(name) == {"vic_7": "vic_7", "%3a": ":"}.get(name)


@given(environments, job_ids)
def test_a_folder_never_leaves_its_root(env, job_id):
    uri = job_uri("/root/", env, job_id, "result.parquet")
    assert uri.startswith(f"/root/{env}/")
    parts = uri.removeprefix("/root/").split("/")
    assert len(parts) == 3 and all(p not in ("", ".", "..") for p in parts)


def test_the_ids_the_sdk_generates_are_kept_as_they_are():
    hex_id = "0123456789abcdef0123456789abcdef"
    assert job_uri("/r", "prod", hex_id, "x") == f"/r/prod/{hex_id}/x"
    assert job_uri("/r", "prod", "vic:7", "x") != job_uri("/r", "prod", "vic_7", "x")  # the collision


@pytest.mark.parametrize("bad", ["", "../x", "a/b", "..", "a..b", "x" * 201, ".hidden"])
def test_unsafe_ids_are_refused(bad):
    with pytest.raises(ValueError, match="not a safe path component"):
        job_uri("/r", "e", bad, "x")
