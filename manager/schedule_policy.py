"""When does a schedule fire? Pure: definition + checkpoint + now -> at most one run.

- The checkpoint is the last time the schedule was evaluated; due times in (checkpoint, now] count.
- The latest due time within `grace` of now is on time and fires.
- Older ones were missed (the manager was down): `skip` fires nothing, `run_once` fires only the
  latest. Never a burst of catch-up runs.
- A schedule seen for the first time is armed: nothing before now fires.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from jobqueue.schedules import ScheduledQuery

MAX_SCAN = 100_000  # due times examined per evaluation (a per-minute cron over ~70 days)


@dataclass(frozen=True)
class Firing:
    due: datetime | None  # the run to start now, if any
    missed: int  # due times passed over without a run
    reason: str


def plan_firing(sq: ScheduledQuery, checkpoint: datetime | None, now: datetime, grace: timedelta) -> Firing:
    if checkpoint is None:
        return Firing(None, 0, "armed: first evaluation, earlier due times are not run")
    due_times: list[datetime] = []
    for n, due in enumerate(sq.occurrences_after(checkpoint)):
        if due > now or n >= MAX_SCAN:
            break
        if sq.in_bounds(due):
            due_times.append(due)
    if not due_times:
        return Firing(None, 0, "not due")
    latest = due_times[-1]
    if now - latest <= grace:
        missed = len(due_times) - 1
        return Firing(latest, missed, "due" + (f"; {missed} earlier due time(s) missed" if missed else ""))
    if sq.missed == "run_once":
        return Firing(latest, len(due_times) - 1, f"missed {len(due_times)} due time(s); running the latest once")
    return Firing(None, len(due_times), f"missed {len(due_times)} due time(s) while down; policy skip")
