"""Counting rules for queue observations (pure)."""

from __future__ import annotations

from jobqueue.models import ConsumerInfo
from manager.observe import summarize


def info(cid: str, seen: float, running: list[str] | None = None) -> str:
    return ConsumerInfo(
        consumer_id=cid, resource_group="g", host="h", pid=1, started_at=0, seen_at=seen, running=running or []
    ).model_dump_json()


def test_running_jobs_are_not_ready_and_stale_consumers_are_reported():
    obs = summarize(
        "g", ready_total=5, deferred=2,
        running={"j1": "c1", "j2": "gone"},
        consumers_raw={"c1": info("c1", 99.0, ["j1"]), "c2": info("c2", 99.5), "old": info("old", 10.0), "bad": "{"},
        oldest_ready_ms=1, now=100.0, stale_after=5.0,
    )
    assert (obs.stats.ready, obs.stats.in_flight, obs.stats.deferred) == (3, 1, 2)
    assert obs.stats.busy_consumers == 1 and obs.busy_ids == {"c1"}
    assert sorted(obs.stale_consumers) == ["bad", "old"]
    assert obs.orphaned_jobs == ("j2",)
    assert [c.consumer_id for c in obs.consumers] == ["c1", "c2"]


def test_running_entry_marks_consumer_busy_before_its_heartbeat():
    obs = summarize("g", 1, 0, {"j1": "c1"}, {"c1": info("c1", 100.0)}, None, 100.0, 5.0)
    assert obs.busy_ids == {"c1"} and obs.stats.ready == 0


def test_held_jobs_are_not_ready():
    """The script's count of due jobs held by their team's limit is left out of `ready` and reported apart."""
    obs = summarize("g", 12, 0, {"j1": "c1"}, {"c1": info("c1", 100.0)}, None, 100.0, 5.0, held=8)
    assert (obs.stats.ready, obs.stats.held, obs.stats.in_flight) == (3, 8, 1)
    idle = summarize("g", 5, 0, {}, {}, None, 100.0, 5.0, held=5)
    assert (idle.stats.ready, idle.stats.held) == (0, 5)


def test_stale_entries_are_not_ready_and_are_reported_for_the_reaper():
    """Due entries of jobs that are over wake no consumer, in an idle group and in a busy one."""
    idle = summarize("g", 2, 0, {}, {}, None, 100.0, 5.0, stale_entries=("over",))
    assert idle.stats.ready == 1 and idle.stale_entries == ("over",)
    busy = summarize("g", 4, 0, {"j1": "c1"}, {"c1": info("c1", 100.0)}, None, 100.0, 5.0, held=1,
                     stale_entries=("a", "b"))
    assert (busy.stats.ready, busy.stats.held, busy.stats.in_flight) == (0, 1, 1) and busy.stale_entries == ("a", "b")
