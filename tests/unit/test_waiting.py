"""`why_waiting`: one reason per observed situation, from a snapshot and `now` alone (no Redis, no clock)."""

from __future__ import annotations

import pytest

from jobqueue.keys import GroupState
from jobqueue.models import ConsumerInfo, WaitCode, WaitReason
from jobqueue.waiting import GroupLimits, WaitNotices, WaitSnapshot, ago, clock_time, manager_stale_after, why_waiting

NOW = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC
STALE = {"manager_stale": 5.0, "consumer_stale": 10.0}


def consumer(cid: str, running: int = 0, seen: float = NOW - 1, draining: bool = False) -> ConsumerInfo:
    return ConsumerInfo(consumer_id=cid, resource_group="big", host="h", pid=1, started_at=NOW - 100, seen_at=seen,
                        running=[f"j{i}" for i in range(running)], draining=draining)


def snap(**changes: object) -> WaitSnapshot:
    base: dict[str, object] = dict(environment="prod", group="big", manager_tick_at=NOW - 1, groups_published=True,
                                   limits=GroupLimits(max_instances=2), state=GroupState(), jobs_ahead=0,
                                   due_at=NOW - 3)
    return WaitSnapshot(**{**base, **changes})  # type: ignore[arg-type]


def why(s: WaitSnapshot, now: float = NOW) -> WaitReason:
    return why_waiting(s, now, **STALE)


def test_no_manager_has_ever_run_in_the_environment():
    r = why(snap(manager_tick_at=None, groups_published=False, limits=None, state=None))
    assert r.code is WaitCode.NO_MANAGER
    assert r.message == ("no manager has ever run in environment 'prod': start `jobqueue up` or deploy the manager")


def test_a_manager_that_published_its_groups_but_never_ticked():
    r = why(snap(manager_tick_at=None))
    assert r.code is WaitCode.NO_MANAGER and "has completed a tick in environment 'prod'" in r.message


def test_a_stale_tick_says_how_long_and_when():
    r = why(snap(manager_tick_at=NOW - 301))
    assert r.code is WaitCode.MANAGER_STALE
    assert r.message.startswith("no manager has ticked for 5 min (last tick 07:54:59 UTC)"), r.message
    assert why(snap(manager_tick_at=NOW - 4.9)).code is not WaitCode.MANAGER_STALE  # within the threshold
    old = why(snap(manager_tick_at=NOW - 3 * 86400))
    assert "for 72 h (last tick 2027-01-12 08:00:00 UTC)" in old.message, old.message


def test_the_manager_comes_before_the_group():  # a stale tick: nothing the group says can change
    r = why(snap(manager_tick_at=NOW - 60, limits=GroupLimits(max_instances=0)))
    assert r.code is WaitCode.MANAGER_STALE


def test_unknown_resource_group():
    r = why(snap(limits=None, state=None))
    assert r.code is WaitCode.UNKNOWN_GROUP and r.message.startswith("unknown resource group 'big'")


def test_a_group_the_manager_cannot_scale():
    r = why(snap(state=GroupState(error="ApiException: forbidden")))
    assert r.code is WaitCode.GROUP_ERROR
    assert r.message == "the manager cannot scale group 'big': ApiException: forbidden"


def test_max_instances_zero():
    r = why(snap(limits=GroupLimits(max_instances=0)))
    assert r.code is WaitCode.MAX_INSTANCES_ZERO and r.message.startswith("group 'big' has max_instances 0")


def test_a_deferred_retry():
    r = why(snap(due_at=NOW + 30, consumers=(consumer("c1"),)))
    assert r.code is WaitCode.DEFERRED and r.message == "deferred: it is due at 08:00:30 UTC (in 30 s)"


def test_the_team_limit_hook():
    r = why(snap(team_limit="team 'ads' runs 8 jobs, its limit", consumers=(consumer("c1"),)))
    assert r == WaitReason(code=WaitCode.TEAM_LIMIT, message="team 'ads' runs 8 jobs, its limit")


@pytest.mark.parametrize(("consumers", "ahead", "jobs_per_consumer", "code"), [
    ((consumer("c1"),), 0, 1, WaitCode.NEXT_IN_LINE),  # an idle consumer: it takes it next
    ((consumer("c1", running=1), consumer("c2")), 0, 1, WaitCode.NEXT_IN_LINE),
    ((consumer("c1", running=1),), 0, 2, WaitCode.NEXT_IN_LINE),  # room for a second job
    ((consumer("c1"),), 1, 1, WaitCode.SCALE_UP_PENDING),  # one slot, one job ahead: a second consumer is due
    ((consumer("c1", draining=True),), 0, 1, WaitCode.SCALE_UP_PENDING),  # a draining consumer takes nothing
    ((consumer("c1", seen=NOW - 11),), 0, 1, WaitCode.SCALE_UP_PENDING),  # no heartbeat: not a consumer
])
def test_whether_a_consumer_has_room(consumers, ahead, jobs_per_consumer, code):
    limits = GroupLimits(max_instances=2, jobs_per_consumer=jobs_per_consumer)
    assert why(snap(consumers=consumers, jobs_ahead=ahead, limits=limits)).code is code


def test_next_in_line_counts_the_jobs_ahead():
    r = why(snap(consumers=(consumer("c1"), consumer("c2")), jobs_ahead=1))
    assert r.message == ("a consumer of group 'big' has room: it takes this job at its next poll "
                         "(1 job ahead of this one)")


def test_at_max_instances_with_its_busy_consumers_and_the_jobs_ahead():
    r = why(snap(consumers=(consumer("c1", running=1), consumer("c2", running=1)), jobs_ahead=3))
    assert r.code is WaitCode.AT_MAX_INSTANCES
    assert r.message == "group 'big' is at max_instances 2 with 2 busy consumers; 3 jobs ahead of this one"


def test_consumer_starting_since_the_scale_up():
    state = GroupState(desired=2, current=2, live=1, starting_since=NOW - 20)
    r = why(snap(state=state, consumers=(consumer("c1", running=1),)))
    assert r.code is WaitCode.CONSUMER_STARTING
    assert r.message == "consumer starting (scaled up 20 s ago); no jobs ahead of this one"


def test_consumers_that_fail_to_start():
    state = GroupState(desired=1, current=1, starting_since=NOW - 50, start_trouble="exit 1: ModuleNotFoundError")
    r = why(snap(state=state))
    assert r.code is WaitCode.CONSUMER_START_FAILING
    assert r.message == "consumers of group 'big' fail to start: exit 1: ModuleNotFoundError"


def test_the_manager_has_yet_to_ask_for_a_consumer():  # submitted since its last tick
    r = why(snap(state=GroupState(desired=0, current=0)))
    assert r.code is WaitCode.SCALE_UP_PENDING
    assert r.message == "the manager starts a consumer for group 'big' at its next tick; no jobs ahead of this one"


def test_a_job_not_in_its_queue_yet_is_not_deferred():  # between the record and the queue entry it has none
    assert why(snap(due_at=None, consumers=(consumer("c1"),))).code is WaitCode.NEXT_IN_LINE


def test_formats():
    assert [ago(s) for s in (-1, 0.4, 20, 119, 300, 7199, 7200)] == ["0 s", "0 s", "20 s", "119 s", "5 min",
                                                                      "120 min", "2 h"]
    assert clock_time(NOW - 61, NOW) == "07:58:59 UTC"
    assert manager_stale_after(0.1) == 5.0 and manager_stale_after(2) == 20.0


def test_notices_tell_a_blocker_at_once_and_a_cold_start_only_when_it_lasts():
    notices = WaitNotices(grace=10, every=60)
    starting = WaitReason(code=WaitCode.CONSUMER_STARTING, message="consumer starting")
    blocked = WaitReason(code=WaitCode.MAX_INSTANCES_ZERO, message="max_instances 0")
    assert [notices.due(starting, t) for t in (0, 5, 9.9)] == [False, False, False]
    assert notices.due(starting, 10) and not notices.due(starting, 11)
    assert notices.due(blocked, 12)  # a new reason, one someone has to act on: at once
    assert not notices.due(blocked, 71.9) and notices.due(blocked, 72)  # again every minute
    assert not notices.due(None, 73) and notices.due(blocked, 74)  # gone and back: told again


def test_a_held_shard_says_it_waits_for_a_sibling_not_for_year_9999():
    from jobqueue.store_scripts import HELD_SCORE_MS

    r = why(snap(due_at=HELD_SCORE_MS / 1000, consumers=(consumer("c1"),)))
    assert r.code is WaitCode.SHARD_HELD and "num_workers" in r.message
