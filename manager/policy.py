"""The autoscaling decision: queue stats + group spec + previous state + now -> desired replicas.

Pure: no I/O, no clock (`now` is an argument). Rules:
- target = clamp(ceil((ready + in_flight) / jobs_per_consumer), min, max); deferred jobs do not count, nor do
  held ones (due, but their team runs its limit in the group: no consumer may take them until one of its jobs ends).
- Scale up at once.
- Scale down only to the highest target recommended during the stabilization window.
- Scale to zero only after the group has had no work for the cooldown.
- Never below the number of busy consumers: a busy consumer is never stopped.
"""

from __future__ import annotations

import math
from typing import NamedTuple


class QueueStats(NamedTuple):
    ready: int
    in_flight: int
    deferred: int = 0
    busy_consumers: int = 0
    held: int = 0  # due jobs whose team runs its limit in the group (`jobqueue.fair_share`): not in `ready`


class ScalingSpec(NamedTuple):
    min_instances: int
    max_instances: int
    jobs_per_consumer: int = 1
    stabilization_seconds: float = 30.0
    cooldown_seconds: float = 60.0


class ScaleState(NamedTuple):
    """What decide() remembers between ticks. Losing it (a restart) only delays scale-down."""

    recommendations: tuple[tuple[float, int], ...] = ()
    last_active_at: float | None = None


class Decision(NamedTuple):
    replicas: int
    direction: str  # "up" | "down" | "none"
    reason: str  # short code, a metric label
    detail: str  # for people: logs and `jobqueue status`
    state: ScaleState


def decide(stats: QueueStats, spec: ScalingSpec, current: int, state: ScaleState, now: float) -> Decision:
    work = stats.ready + stats.in_flight
    last_active = now if work + stats.held > 0 else state.last_active_at
    raw = math.ceil(work / spec.jobs_per_consumer)
    target = min(max(raw, spec.min_instances), spec.max_instances)
    # The window keeps only recommendations that can still be its maximum (each higher than every
    # later one), so it stays a handful of entries however many ticks the window spans.
    window = [(t, r) for t, r in state.recommendations if now - t < spec.stabilization_seconds]
    while window and window[-1][1] <= target:
        window.pop()
    window.append((now, target))
    new_state = ScaleState(recommendations=tuple(window), last_active_at=last_active)
    load = f"{stats.ready} ready, {stats.in_flight} in flight"
    if stats.held:
        load += f", {stats.held} held by team limits"

    if target >= current:
        if target == current:
            return Decision(current, "none", "steady", f"{load}; {current} consumer(s) fit", new_state)
        reason = "min_instances" if raw < spec.min_instances else "queue"
        return Decision(target, "up", reason, f"{load}; need {target} consumer(s)", new_state)

    desired, reason, detail = target, "idle" if work == 0 else "queue", f"{load}; need {target}"
    stabilized = window[0][1]
    if current > spec.max_instances:
        desired, reason, detail = max(target, spec.max_instances), "max_instances", f"above max {spec.max_instances}"
    elif stabilized > desired:
        desired = min(current, stabilized)
        reason, detail = "stabilizing", f"{load}; holding {desired} (highest in {spec.stabilization_seconds:g}s)"
    if desired == 0:
        idle_for = math.inf if last_active is None else now - last_active
        if idle_for < spec.cooldown_seconds:
            desired = 1
            reason, detail = "cooldown", f"idle {idle_for:.1f}s of {spec.cooldown_seconds:g}s before scaling to zero"
    if desired < stats.busy_consumers:
        desired = min(current, stats.busy_consumers)
        reason, detail = "busy", f"{stats.busy_consumers} consumer(s) busy; never stopping a busy consumer"
    if desired == current:
        return Decision(current, "none", reason, detail, new_state)
    return Decision(desired, "down", reason, detail, new_state)


def hold_steady(previous: Decision, stats: QueueStats, now: float) -> Decision:
    """decide()'s answer when its inputs (stats, spec, current) are those that gave `previous`, a steady
    decision: the same decision, with the window's newest entry re-stamped at `now`. Entries that
    expired meanwhile are pruned by the next full decide() before they are used. A test checks that
    interleaving this with decide() gives the same decisions as decide() alone."""
    state = previous.state
    window = state.recommendations[:-1] + ((now, previous.replicas),)
    last_active = now if stats.ready + stats.in_flight + stats.held > 0 else state.last_active_at
    return previous._replace(state=ScaleState(window, last_active))
