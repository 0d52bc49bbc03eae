"""The pure rules of fair share, priorities and team limits (`jobqueue.fair_share`). The scripts' copies of them
are checked against these on a real Redis in tests/integration/test_fair_share.py."""

from __future__ import annotations

import json
import math

import pytest

from jobqueue.errors import SettingsError
from jobqueue.fair_share import (
    HORIZON_MS,
    JOB_COST_MS,
    MAX_WEIGHT,
    NEWCOMER_LEAD_MS,
    FairShare,
    fair_score,
    limits_json,
    team_limit_message,
    team_running_limit,
    virtual_time,
    weight,
)
from jobqueue.keys import Keys
from jobqueue.models import Priority
from jobqueue.quotas import TeamQuota
from jobqueue.settings import Settings, load_settings

NOW = 1_800_000_000_000.0
P = "jobqueue:env:"


LEAD = NEWCOMER_LEAD_MS


def test_a_new_owner_goes_just_ahead_of_the_head_and_passes_nothing_else() -> None:
    assert fair_score(NOW - 500, None, 0.5, NOW) == (NOW - 500 - LEAD, NOW - 500 - LEAD)
    assert 0 < LEAD < JOB_COST_MS / MAX_WEIGHT  # less than the smallest step a job of any weight takes
    assert NOW - LEAD != NOW  # and a difference a double still holds at today's milliseconds


def test_an_owner_with_a_backlog_scores_after_its_own_last_job() -> None:
    assert fair_score(NOW - 500, NOW - 400, 0.5, NOW) == (NOW - 399.5, NOW - 399.5)


def test_an_owner_behind_the_virtual_time_restarts_from_it() -> None:
    assert fair_score(NOW - 500, NOW - 900, 1.0, NOW) == (NOW - 500 - LEAD, NOW - 500 - LEAD)


def test_the_score_is_never_in_the_future_but_the_finish_time_keeps_counting() -> None:
    assert fair_score(NOW, NOW + 10, 0.5, NOW) == (NOW, NOW + 10.5)


@pytest.mark.parametrize("finish", [math.inf, -math.inf, math.nan, NOW + HORIZON_MS + 1])
def test_a_finish_time_that_is_not_a_time_is_ignored(finish: float) -> None:
    assert fair_score(NOW - 10, finish, 0.5, NOW) == (NOW - 10 - LEAD, NOW - 10 - LEAD)


def test_the_virtual_time_is_the_lowest_waiting_score_of_this_environment() -> None:
    entries = [("other:env:x", NOW - 900.0), (P + "running", NOW - 800.0), (P + "a", NOW - 700.0),
               (P + "b", NOW - 600.0)]
    assert virtual_time(entries, ["running"], P, NOW) == NOW - 700


@pytest.mark.parametrize("score", [-math.inf, -1.0, NOW - HORIZON_MS - 1, NOW + 1])
def test_a_score_that_is_not_a_due_time_within_a_day_is_never_the_virtual_time(score: float) -> None:
    assert virtual_time([(P + "x", score)], [], P, NOW) == NOW


def test_weights_are_the_priority_times_the_team() -> None:
    settings = Settings(team_weights={"risk": 3})
    assert [weight(settings, p, None) for p in Priority] == [4, 2, 1]
    assert weight(settings, Priority.LOW, "risk") == 3
    assert weight(settings, Priority.HIGH, "other") == 4
    share = FairShare.of(settings, "ann", "risk", Priority.HIGH)
    assert share is not None and share.step == pytest.approx(1 / 12)
    assert json.loads(share.to_json(Keys("p:"), "g"))["finish"] == "p:fair-finish:g"
    assert FairShare.of(Settings(fair_share=False), "ann", None, Priority.HIGH) is None


@pytest.mark.parametrize("value", ['{"risk": 0}', '{"risk": -1}', '{"risk": 101}', '{"risk": "x"}', "[1]", "{"])
def test_a_bad_team_weight_is_refused_naming_the_setting(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("JOBQUEUE_TEAM_WEIGHTS", value)
    with pytest.raises(SettingsError, match="JOBQUEUE_TEAM_WEIGHTS"):
        load_settings()


def test_team_running_limits_default_and_override() -> None:
    settings = Settings(quota_max_running_per_team=4, quota_team_overrides={"risk": TeamQuota(max_running=1),
                                                                            "ml": TeamQuota(max_queued=9)})
    assert team_running_limit(settings, "risk") == (1, 'JOBQUEUE_QUOTA_TEAM_OVERRIDES["risk"].max_running')
    assert team_running_limit(settings, "ml") == (4, "JOBQUEUE_QUOTA_MAX_RUNNING_PER_TEAM")
    assert team_running_limit(settings, None)[0] == 0
    assert json.loads(limits_json(settings)) == {"default": 4, "teams": {"risk": 1}}
    assert limits_json(Settings()) == ""
    assert limits_json(Settings(quota_team_overrides={"risk": TeamQuota(max_running=2)})) != ""
    assert team_limit_message("risk", 4, "X").startswith("waiting: team risk at its limit of 4 running")
