"""decide(): table-driven, no I/O, time passed in."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from manager.policy import QueueStats, ScaleState, ScalingSpec, decide, hold_steady

SPEC = ScalingSpec(min_instances=0, max_instances=4, jobs_per_consumer=2, stabilization_seconds=10, cooldown_seconds=30)


@pytest.mark.parametrize(
    ("case", "stats", "spec", "current", "state", "now", "want", "reason"),
    [
        ("idle stays at zero", QueueStats(0, 0), SPEC, 0, ScaleState(), 100, 0, "steady"),
        ("scale from zero at once", QueueStats(1, 0), SPEC, 0, ScaleState(), 100, 1, "queue"),
        ("ceil(ready+in_flight / jobs_per_consumer)", QueueStats(3, 2), SPEC, 1, ScaleState(), 100, 3, "queue"),
        ("clamped to max", QueueStats(50, 0), SPEC, 1, ScaleState(), 100, 4, "queue"),
        ("min_instances kept when idle",
         QueueStats(0, 0), ScalingSpec(2, 4, 1, 10, 30), 0, ScaleState(), 100, 2, "min_instances"),
        ("deferred jobs do not wake consumers", QueueStats(0, 0, deferred=9), SPEC, 0, ScaleState(), 100, 0, "steady"),
        ("scale down waits for the stabilization window",
         QueueStats(1, 0), SPEC, 3, ScaleState(((95.0, 3),), 95.0), 100, 3, "stabilizing"),
        ("scale down after the window",
         QueueStats(1, 0), SPEC, 3, ScaleState(((85.0, 3),), 99.0), 100, 1, "queue"),
        ("down to the highest recommendation in the window",
         QueueStats(1, 0), SPEC, 4, ScaleState(((85.0, 4), (95.0, 2)), 99.0), 100, 2, "stabilizing"),
        ("no scale to zero during cooldown",
         QueueStats(0, 0), SPEC, 2, ScaleState((), 80.0), 100, 1, "cooldown"),
        ("scale to zero after cooldown",
         QueueStats(0, 0), SPEC, 1, ScaleState((), 60.0), 100, 0, "idle"),
        ("never below busy consumers",
         QueueStats(0, 2), ScalingSpec(0, 4, 4, 0, 0), 3, ScaleState(), 100, 1, "queue"),
        ("busy floor beats the target",
         QueueStats(0, 2, busy_consumers=2), ScalingSpec(0, 4, 4, 0, 0), 3, ScaleState(), 100, 2, "busy"),
        ("busy floor beats max after a config change",
         QueueStats(0, 3, busy_consumers=3), ScalingSpec(0, 1, 1, 0, 0), 3, ScaleState(), 100, 3, "busy"),
        ("above max scales down without waiting",
         QueueStats(9, 0), ScalingSpec(0, 2, 1, 60, 60), 4, ScaleState(((99.0, 4),), 99.0), 100, 2, "max_instances"),
        ("max 0 disables the group", QueueStats(5, 0), ScalingSpec(0, 0, 1), 0, ScaleState(), 100, 0, "steady"),
    ],
)
def test_decide(case, stats, spec, current, state, now, want, reason):
    decision = decide(stats, spec, current, state, now)
    assert (decision.replicas, decision.reason) == (want, reason), case
    assert decision.direction == ("up" if want > current else "down" if want < current else "none")


def test_state_remembers_activity_and_prunes_window():
    state = ScaleState(((50.0, 3), (95.0, 2)), None)
    d = decide(QueueStats(1, 0), SPEC, 1, state, 100.0)
    assert d.state.last_active_at == 100.0
    assert d.state.recommendations == ((95.0, 2), (100.0, 1))


def test_full_cycle_zero_to_n_to_zero():
    """Drive decide() through a burst and an idle period, feeding back its own replicas."""
    state, replicas, seen = ScaleState(), 0, []
    timeline = [(0, QueueStats(8, 0))] + [(t, QueueStats(0, 4)) for t in range(1, 5)]
    timeline += [(t, QueueStats(0, 0)) for t in range(5, 60)]
    for now, stats in timeline:
        d = decide(stats, SPEC, replicas, state, float(now))
        state, replicas = d.state, d.replicas
        seen.append(replicas)
    assert max(seen) == 4 and seen[0] == 4
    assert seen[-1] == 0
    first_zero = seen.index(0)
    assert first_zero >= 4 + 30  # not before the cooldown after the last work at t=4


def naive_decide_replicas(history, spec, now):
    """Reference for the stabilization window: the highest target recommended within it."""
    return max(r for t, r in history if now - t < spec.stabilization_seconds)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.floats(0.1, 4.0)), min_size=1, max_size=40))
def test_the_compact_window_keeps_the_same_maximum_as_the_whole_history(steps):
    spec = ScalingSpec(min_instances=0, max_instances=6, jobs_per_consumer=1, stabilization_seconds=10,
                       cooldown_seconds=0)
    state, now, history = ScaleState(), 0.0, []
    for ready, dt in steps:
        now += dt
        target = min(ready, spec.max_instances)
        history.append((now, target))
        state = decide(QueueStats(ready, 0), spec, 6, state, now).state
        assert max(r for _, r in state.recommendations) == naive_decide_replicas(history, spec, now)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.floats(0.1, 6.0), st.integers(1, 4)), min_size=1, max_size=40))
def test_hold_steady_between_full_decisions_decides_the_same(steps):
    """The manager's fast path for unchanged steady groups: decisions equal decide() alone, step for step."""
    spec = ScalingSpec(min_instances=0, max_instances=5, jobs_per_consumer=1, stabilization_seconds=8,
                       cooldown_seconds=5)
    full, fast = ScaleState(), ScaleState()
    full_current = fast_current = 0
    previous: tuple | None = None
    now = 0.0
    for ready, dt, repeats in steps:
        for _ in range(repeats):  # the same inputs several ticks in a row
            now += dt
            stats = QueueStats(ready, 0)
            a = decide(stats, spec, full_current, full, now)
            if previous is not None and previous[0] == (stats, fast_current) and previous[1].reason == "steady":
                b = hold_steady(previous[1], stats, now)
            else:
                b = decide(stats, spec, fast_current, fast, now)
            assert (a.replicas, a.direction, a.reason) == (b.replicas, b.direction, b.reason)
            previous = ((stats, fast_current), b)
            full, fast = a.state, b.state
            full_current, fast_current = a.replicas, b.replicas


def test_jobs_held_by_their_team_limit_do_not_scale_the_group():
    """10 due jobs of a team that runs its limit of 4: 4 in flight, none of the 10 can start; one other job can."""
    spec = ScalingSpec(min_instances=0, max_instances=20, jobs_per_consumer=1, stabilization_seconds=0,
                       cooldown_seconds=30)
    d = decide(QueueStats(ready=1, in_flight=4, held=10, busy_consumers=4), spec, 4, ScaleState(), 100.0)
    assert (d.replicas, d.direction) == (5, "up") and "10 held by team limits" in d.detail
    only_held = decide(QueueStats(ready=0, in_flight=4, held=10, busy_consumers=4), spec, 4, ScaleState(), 100.0)
    assert only_held.replicas == 4 and only_held.reason == "steady"
    # held jobs are work still waiting: the group does not count as idle
    idle = decide(QueueStats(ready=0, in_flight=0, held=3), spec, 1, ScaleState((), 10.0), 100.0)
    assert idle.state.last_active_at == 100.0 and idle.replicas == 1 and idle.reason == "cooldown"
