"""Attribution values are checked before anything is staged, and an error names the field and the fix; the
per-team metric label stays bounded."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from jobqueue.attribution import check_attribution, default_owner, log_context, parse_tag_filters
from jobqueue.errors import InvalidQueryError
from jobqueue.job_filter import JobFilter
from jobqueue.models import JobRecord, JobStatus
from manager.metrics import OTHER_TEAMS, TeamLabels


@pytest.mark.parametrize(("kwargs", "field", "fix"), [
    ({"tags": {"bad key!": "x"}}, "tags['bad key!']", "not a valid tag name; use letters"),
    ({"tags": {"1st": "x"}}, "tags['1st']", "starting with a letter"),
    ({"tags": {"k": 3}}, "tags['k']", "value must be text"),
    ({"tags": {"k": "v" * 257}}, "tags['k']", "at most 256"),
    ({"tags": {f"k{i}": "v" for i in range(33)}}, "tags", "at most 32"),
    ({"tags": ["k=v"]}, "tags", "must be a mapping"),
    ({"team": "Risk Team"}, "team", "lowercase letters"),
    ({"owner": "alice smith"}, "owner", "letters, digits"),
    ({"query_name": "x" * 200}, "query_name", "at most 128"),
    ({"correlation_id": "a b"}, "correlation_id", "at most 128"),
])
def test_a_bad_value_is_refused_naming_the_field_and_the_fix(kwargs, field, fix):
    with pytest.raises(InvalidQueryError) as e:
        check_attribution(**kwargs)
    assert e.value.field == field and fix in e.value.message, str(e.value)


def test_good_values_pass_unchanged():
    a = check_attribution("alice@example.com", "risk", {"project": "churn", "cost.center": "42"}, "daily.churn",
                          "trace-1/2")
    assert (a.owner, a.team, a.tags, a.query_name, a.correlation_id) == (
        "alice@example.com", "risk", {"project": "churn", "cost.center": "42"}, "daily.churn", "trace-1/2")
    assert log_context(a) == a.model_dump()
    assert log_context(check_attribution("bob")) == {"owner": "bob"}  # unset fields are not logged


def test_the_default_owner_is_a_valid_owner():
    assert check_attribution(default_owner()).owner == default_owner()


def test_tag_filters():
    assert parse_tag_filters(["a=1", "b=x=y", "c="]) == {"a": "1", "b": "x=y", "c": ""}
    with pytest.raises(InvalidQueryError, match="--tag: 'a' must be NAME=VALUE"):
        parse_tag_filters(["a"])


def test_a_job_filter_needs_every_condition():
    record = JobRecord(job_id="j", status=JobStatus.QUEUED, resource_group="default", output=["u.f"], input_rows=1,
                       submitted_at=datetime.now(UTC), owner="alice", team="risk", tags={"p": "churn", "q": "1"},
                       query_name="daily")
    assert JobFilter().matches(record) and not JobFilter().narrows
    assert JobFilter(owner="alice", team="risk", tags={"p": "churn"}, query_name="daily").matches(record)
    for miss in (JobFilter(owner="bob"), JobFilter(team="growth"), JobFilter(tags={"p": "other"}),
                 JobFilter(tags={"missing": ""}), JobFilter(query_name="weekly"), JobFilter(state=JobStatus.RUNNING),
                 JobFilter(group="gpu")):
        assert miss.narrows and not miss.matches(record), miss


def test_team_labels_are_bounded_and_never_move():
    labels = TeamLabels(max_teams=2)
    assert [labels.label(t) for t in ("a", "b", "c", "a", "d", "b")] == ["a", "b", OTHER_TEAMS, "a", OTHER_TEAMS, "b"]
    assert TeamLabels(0).label("a") == OTHER_TEAMS
    assert check_attribution(team="a").team == "a"
    with pytest.raises(InvalidQueryError):
        check_attribution(team=OTHER_TEAMS)  # no team can be mistaken for the overflow label
