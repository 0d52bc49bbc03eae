"""Schedule firing: DST, missed runs, bounds. Pure, with an explicit clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from jobqueue.schedules import ScheduledQuery, next_due
from manager.schedule_policy import plan_firing

BERLIN = ZoneInfo("Europe/Berlin")
GRACE = timedelta(seconds=60)


def sq(**kw) -> ScheduledQuery:
    return ScheduledQuery.model_validate({"name": "s", "schedule": "30 2 * * *", "output": ["user.f0"],
                                         "input": {"user.id": [1]}, "timezone": "Europe/Berlin", **kw})


def test_spring_forward_runs_once_at_the_first_valid_time():
    s = sq()
    assert next_due(s, datetime(2026, 3, 28, 12, tzinfo=BERLIN)) == datetime(2026, 3, 29, 3, 0, tzinfo=BERLIN)
    assert next_due(s, datetime(2026, 3, 29, 3, 0, tzinfo=BERLIN)) == datetime(2026, 3, 30, 2, 30, tzinfo=BERLIN)


def test_fall_back_daily_runs_once_hourly_runs_twice():
    s = sq()
    first = next_due(s, datetime(2026, 10, 24, 12, tzinfo=BERLIN))
    assert first.astimezone(UTC) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # 02:30 CEST
    assert next_due(s, first).date().isoformat() == "2026-10-26"
    hourly = sq(schedule="0 * * * *")
    t = datetime(2026, 10, 25, 1, 30, tzinfo=BERLIN)
    seen = []
    for _ in range(3):
        t = next_due(hourly, t)
        seen.append(t.astimezone(UTC).strftime("%H:%M"))
    assert seen == ["00:00", "01:00", "02:00"]  # 02:00 CEST, 02:00 CET, 03:00 CET


def test_on_time_run_fires_once_per_due_time():
    s = sq(schedule="*/5 * * * *", timezone="UTC")
    due = datetime(2026, 5, 1, 10, 5, tzinfo=UTC)
    firing = plan_firing(s, due - timedelta(seconds=1), due + timedelta(seconds=1), GRACE)
    assert firing.due == due and firing.missed == 0
    assert plan_firing(s, due + timedelta(seconds=1), due + timedelta(seconds=2), GRACE).due is None


@pytest.mark.parametrize(("policy", "fires"), [("skip", False), ("run_once", True)])
def test_missed_runs_never_burst(policy, fires):
    s = sq(schedule="0 * * * *", timezone="UTC", missed=policy)
    down_since = datetime(2026, 5, 1, 0, 30, tzinfo=UTC)
    now = datetime(2026, 5, 1, 5, 20, tzinfo=UTC)  # 01:00 .. 05:00 missed: five due times
    firing = plan_firing(s, down_since, now, GRACE)
    assert firing.missed == (4 if fires else 5)
    assert firing.due == (datetime(2026, 5, 1, 5, 0, tzinfo=UTC) if fires else None)


def test_first_evaluation_arms_without_running_history():
    assert plan_firing(sq(), None, datetime(2026, 5, 1, tzinfo=UTC), GRACE).due is None


def test_bounds():
    s = sq(schedule="0 0 * * *", timezone="UTC", lower_bound="2026-05-03T00:00:00Z", upper_bound="2026-05-04T00:00:00Z")
    assert next_due(s, datetime(2026, 5, 1, tzinfo=UTC)) == datetime(2026, 5, 3, tzinfo=UTC)
    assert next_due(s, datetime(2026, 5, 4, tzinfo=UTC)) is None
