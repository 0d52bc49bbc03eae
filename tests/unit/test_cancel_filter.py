"""`CancelFilter` (the body of `POST /v1/jobs/cancel`): a condition is given or left out, never null, as the served
schema says (schemathesis' negative phase found `{"submitted_before": null, ...}` accepted with 200)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from jobqueue.api.wire import CancelFilter


@pytest.mark.parametrize("field", ["owner", "team", "state", "resource_group", "tags", "query_name",
                                   "submitted_after", "submitted_before"])
def test_a_null_condition_is_refused_naming_it(field):
    with pytest.raises(ValidationError) as e:
        CancelFilter.model_validate({"query_name": "daily", field: None} if field != "query_name"
                                    else {"owner": "alice", field: None})
    assert [err["loc"] for err in e.value.errors()] == [(field,)]
    assert "leave the condition out instead of null" in str(e.value)


def test_conditions_left_out_or_given_are_taken():
    wanted = CancelFilter.model_validate({"owner": "alice", "submitted_before": "2026-01-01T00:00:00Z"})
    assert wanted.model_dump(exclude_none=True)["owner"] == "alice"
    with pytest.raises(ValidationError, match="give at least one condition"):
        CancelFilter.model_validate({})
