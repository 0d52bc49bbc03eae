"""The listing planner (`jobqueue.listing_plan`): which index it walks, which it checks, in what order, and where a
cursor leaves it. Pure: sizes are given, nothing is read."""

from __future__ import annotations

import math

import pytest

from jobqueue.errors import InvalidQueryError
from jobqueue.job_filter import JobFilter
from jobqueue.keys import Keys, ListingIndex
from jobqueue.listing_plan import (
    GATHER_MAX,
    ListingQuery,
    PlanKind,
    Position,
    SortKey,
    conditions,
    make_plan,
    next_bounds,
    order_gathered,
    past,
    score_text,
    size_reads,
)
from jobqueue.models import JobStatus

K = Keys("p:")
OWNER, TEAM = K.jobs_by(ListingIndex.OWNER, "alice"), K.jobs_by(ListingIndex.TEAM, "risk")
STATE, TAG = K.jobs_by(ListingIndex.STATE, "queued"), K.jobs_by(ListingIndex.TAG, "project=churn")


def test_no_filter_walks_every_job_newest_first():
    plan = make_plan(K, ListingQuery(), {})
    assert plan.kind is PlanKind.WALK and plan.walk == K.jobs_index and plan.descending
    assert plan.members_of == () and (plan.low, plan.high) == (-math.inf, math.inf)
    assert size_reads(K, ListingQuery()) == []


def test_the_smallest_index_is_walked_and_the_others_are_checked():
    query = ListingQuery(wanted=JobFilter(owner="alice", team="risk", state=JobStatus.QUEUED,
                                          tags={"project": "churn"}))
    assert set(size_reads(K, query)) == {OWNER, TEAM, STATE, TAG}
    plan = make_plan(K, query, {OWNER: 900, TEAM: 25_000, STATE: 40, TAG: 3000})
    assert plan.walk == STATE and set(plan.members_of) == {OWNER, TEAM, TAG}


def test_an_empty_index_or_an_empty_window_reads_nothing():
    query = ListingQuery(wanted=JobFilter(owner="alice", team="risk"))
    assert make_plan(K, query, {OWNER: 10, TEAM: 0}).kind is PlanKind.EMPTY
    backwards = ListingQuery(submitted_after_ms=2000.0, submitted_before_ms=1000.0)
    assert make_plan(K, backwards, {}).kind is PlanKind.EMPTY


def test_a_user_is_narrowed_to_their_own_index_and_never_sees_another_owner():
    mine = ListingQuery(only_owner="alice")
    assert conditions(K, mine) == [OWNER]
    assert make_plan(K, mine, {OWNER: 5}).walk == OWNER
    theirs = ListingQuery(wanted=JobFilter(owner="bob"), only_owner="alice")
    assert conditions(K, theirs) is None and make_plan(K, theirs, {}).kind is PlanKind.EMPTY
    same = ListingQuery(wanted=JobFilter(owner="alice"), only_owner="alice")
    assert conditions(K, same) == [OWNER]


def test_a_user_who_sees_their_teams_jobs_walks_the_union_of_their_two_indexes_or_checks_it():
    """JOBQUEUE_USERS_SEE_TEAM_JOBS: alice of risk sees her jobs and risk's; the listing reads only those indexes."""
    scope = {"only_owner": "alice", "also_team": "risk"}
    everything = ListingQuery(**scope)
    assert conditions(K, everything) == [] and set(size_reads(K, everything)) == {OWNER, TEAM}
    plan = make_plan(K, everything, {OWNER: 30, TEAM: 400})
    assert plan.kind is PlanKind.WALK and plan.walk_any == (OWNER, TEAM) and plan.members_of == ()
    assert make_plan(K, everything, {OWNER: 30, TEAM: 0}).walk_any == (OWNER,)  # an empty one is not walked
    assert make_plan(K, everything, {OWNER: 0, TEAM: 0}).kind is PlanKind.EMPTY

    queued = ListingQuery(wanted=JobFilter(state=JobStatus.QUEUED), **scope)
    few = make_plan(K, queued, {STATE: 12, OWNER: 30, TEAM: 400})  # fewer queued jobs than visible ones
    assert few.walk == STATE and few.walk_any == () and few.members_of_any == (OWNER, TEAM)
    many = make_plan(K, queued, {STATE: 90_000, OWNER: 30, TEAM: 400})
    assert many.walk_any == (OWNER, TEAM) and many.members_of == (STATE,)

    # a filter on her own owner or team is inside what she sees: no union
    for wanted in (JobFilter(owner="alice"), JobFilter(team="risk"), JobFilter(owner="bob", team="risk")):
        narrowed = ListingQuery(wanted=wanted, **scope)
        plan = make_plan(K, narrowed, dict.fromkeys(size_reads(K, narrowed), 10))
        assert plan.walk_any == () and plan.members_of_any == (), wanted
    bob = ListingQuery(wanted=JobFilter(owner="bob"), **scope)  # bob's jobs of risk
    plan = make_plan(K, bob, {K.jobs_by(ListingIndex.OWNER, "bob"): 5, OWNER: 30, TEAM: 400})
    assert plan.walk == K.jobs_by(ListingIndex.OWNER, "bob") and plan.members_of_any == (OWNER, TEAM)
    elsewhere = ListingQuery(wanted=JobFilter(owner="bob", team="ml"), **scope)  # neither hers nor risk's
    assert conditions(K, elsewhere) is None and make_plan(K, elsewhere, {}).kind is PlanKind.EMPTY

    by_wait = make_plan(K, ListingQuery(sort=SortKey.WAIT, **scope), {OWNER: 30, TEAM: 400})
    assert by_wait.kind is PlanKind.GATHER and by_wait.walk_any == (OWNER, TEAM) and by_wait.order_by == K.jobs_by_wait
    big = make_plan(K, ListingQuery(sort=SortKey.WAIT, **scope), {OWNER: 30, TEAM: GATHER_MAX})
    assert big.kind is PlanKind.WALK and big.walk == K.jobs_by_wait and big.members_of_any == (OWNER, TEAM)


def test_the_time_window_and_cursor_bound_the_walk():
    query = ListingQuery(submitted_after_ms=1000.0, submitted_before_ms=5000.0, after=Position(4000.0, "j5"))
    plan = make_plan(K, query, {})
    assert (plan.low, plan.high, plan.after) == (1000.0, 4000.0, Position(4000.0, "j5"))
    up = make_plan(K, ListingQuery(descending=False, after=Position(2000.0, "j1")), {})
    assert (up.low, up.high) == (2000.0, math.inf)
    assert next_bounds(plan, Position(3000.0, "j9")) == (1000.0, 3000.0)


def test_ties_on_the_score_go_by_job_id_past_the_cursor():
    down = make_plan(K, ListingQuery(), {})
    at = Position(10.0, "m")
    assert past(down, Position(10.0, "a"), at) and not past(down, Position(10.0, "m"), at)
    assert not past(down, Position(10.0, "z"), at) and past(down, Position(9.0, "z"), at)
    up = make_plan(K, ListingQuery(descending=False), {})
    assert past(up, Position(10.0, "z"), at) and not past(up, Position(10.0, "a"), at)


def test_sorting_by_wait_walks_the_wait_index_and_checks_the_window_by_submission():
    query = ListingQuery(wanted=JobFilter(team="risk"), sort=SortKey.WAIT, submitted_after_ms=1.0)
    plan = make_plan(K, query, {TEAM: GATHER_MAX + 1})
    assert plan.kind is PlanKind.WALK and plan.walk == K.jobs_by_wait and plan.members_of == (TEAM,)
    assert plan.window_of == K.jobs_index and plan.window == (1.0, math.inf)
    unwindowed = make_plan(K, ListingQuery(sort=SortKey.DURATION, descending=False), {})
    assert unwindowed.walk == K.jobs_by_duration and unwindowed.window_of is None and not unwindowed.descending


def test_a_small_filter_is_gathered_whole_and_ordered_by_the_sort_index():
    query = ListingQuery(wanted=JobFilter(owner="alice", team="risk"), sort=SortKey.DURATION)
    plan = make_plan(K, query, {OWNER: 12, TEAM: GATHER_MAX * 4})
    assert plan.kind is PlanKind.GATHER and plan.walk == OWNER and plan.order_by == K.jobs_by_duration
    assert plan.members_of == (TEAM,)
    rows = [("a", 5.0), ("b", None), ("c", 9.0), ("d", 5.0)]
    assert order_gathered(plan, rows) == [Position(9.0, "c"), Position(5.0, "d"), Position(5.0, "a")]
    later = make_plan(K, ListingQuery(wanted=JobFilter(owner="alice"), sort=SortKey.DURATION,
                                      after=Position(5.0, "d")), {OWNER: 12})
    assert order_gathered(later, rows) == [Position(5.0, "a")]


def test_cursors_and_score_bounds_as_redis_reads_them():
    assert Position.decode(Position(1712.5, "abc").encode()) == Position(1712.5, "abc")
    with pytest.raises(InvalidQueryError):
        Position.decode("not-a-cursor")
    assert [score_text(-math.inf), score_text(math.inf), score_text(2.0), score_text(2.0, True)] == \
        ["-inf", "+inf", "2.0", "(2.0"]


def test_shards_are_left_out_unless_asked_for():
    """A sharded query is listed as its parent: the index of every shard is checked, and a job in it left out;
    `parent` walks that query's shards, `shards` lists every job."""
    assert make_plan(K, ListingQuery(), {}).not_members_of == (K.shard_jobs,)
    owned = ListingQuery(wanted=JobFilter(owner="alice"), sort=SortKey.WAIT)
    assert make_plan(K, owned, {OWNER: 10}).not_members_of == (K.shard_jobs,)
    parent = K.jobs_by(ListingIndex.PARENT, "p1")
    of_parent = ListingQuery(wanted=JobFilter(parent="p1", owner="alice"))
    assert set(size_reads(K, of_parent)) == {parent, OWNER}
    plan = make_plan(K, of_parent, {parent: 3, OWNER: 900})
    assert plan.walk == parent and plan.members_of == (OWNER,) and plan.not_members_of == ()
    assert make_plan(K, ListingQuery(wanted=JobFilter(shards=True)), {}).not_members_of == ()
