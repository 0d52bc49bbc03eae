"""Where a staged upload goes: under its owner's own prefix, never outside the staging root, never a job folder."""

from __future__ import annotations

import pytest

from jobqueue.storage import from_path_component
from jobqueue.upload_store import is_ref, new_ref, upload_uri


def test_an_upload_goes_under_its_owners_prefix_encoded():
    ref = new_ref()
    assert is_ref(ref)
    uri = upload_uri("s3://bucket/staging/", "prod", "Alice/../bob", ref)
    prefix, owner, named, leaf = uri.rsplit("/", 3)
    assert prefix == "s3://bucket/staging/prod/_uploads" and named == ref and leaf == "input"
    assert "/" not in owner and owner not in ("", ".", "..") and from_path_component(owner) == "Alice/../bob"
    assert upload_uri("s3://b/s", "prod", "alice", ref) != upload_uri("s3://b/s", "prod", "Alice", ref)


@pytest.mark.parametrize("ref", ["", "up_", "up_" + "0" * 31, "up_" + "G" * 32, "../up_" + "0" * 32, "x" * 35])
def test_only_a_reference_names_an_upload(ref):
    assert not is_ref(ref)
    with pytest.raises(ValueError):
        upload_uri("s3://b/s", "prod", "alice", ref)


def test_the_uploads_folder_is_never_taken_for_a_job():
    from jobqueue.storage import _SAFE_ID  # the pattern of job ids the garbage collector's staged-input pass lists

    assert not _SAFE_ID.match("_uploads")
