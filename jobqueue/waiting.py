"""Why a queued job waits: `why_waiting(snapshot, now, ...)` turns what was observed into one `WaitReason`.

Pure: no I/O, no clock (`now` is an argument). `jobqueue.wait_observe` gathers the `WaitSnapshot` from
Redis (the manager's last tick, the group as the manager publishes it and its last decision, the group's
consumers, the job's place in its queue). The reasons, first match wins:

    no manager has ever ticked / the last tick is stale     -> nothing will start a consumer
    the group is unknown to the manager, or it cannot scale -> nothing will start a consumer for it
    max_instances 0                                         -> no consumer may run
    a retry's due time is ahead                             -> deferred
    the team runs its limit of jobs in the group            -> waits for one of them to end (`jobqueue.fair_share`)
    a consumer has room for this job and the jobs ahead     -> next in line
    consumers fail to start / are starting / the group is at max_instances / the manager has yet to ask
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

from jobqueue.keys import GroupState
from jobqueue.models import ConsumerInfo, WaitCode, WaitReason
from jobqueue.store_scripts import HELD_SCORE_MS


def manager_stale_after(tick_seconds: float) -> float:
    """A manager tick older than this (10 ticks, at least 5 s) means no manager runs: queued jobs wait."""
    return max(5.0, 10 * tick_seconds)


class GroupLimits(NamedTuple):
    """What the manager publishes of a group that bears on waiting (`<p>groups`)."""

    max_instances: int
    jobs_per_consumer: int = 1


@dataclass(frozen=True)
class WaitSnapshot:
    """What was observed of one queued job and the things it waits for, at one moment."""

    environment: str
    group: str
    manager_tick_at: float | None  # epoch seconds of the leader's last tick; None: none recorded
    groups_published: bool  # a manager has published its groups in this environment (it has run)
    limits: GroupLimits | None  # the job's group as published; None when the manager does not publish it
    state: GroupState | None  # the manager's last decision for the group
    consumers: tuple[ConsumerInfo, ...] = ()  # the group's consumers, live or not
    jobs_ahead: int = 0  # queued jobs of the group that consumers take before this one (running ones not counted)
    due_at: float | None = None  # epoch seconds the queue entry is due; None: not in its queue
    team_limit: str | None = None  # why the job's team may start no more jobs now (`fair_share.team_limit_message`)


def why_waiting(snap: WaitSnapshot, now: float, *, manager_stale: float, consumer_stale: float) -> WaitReason:
    """The reason a queued job is not running at `now`. `manager_stale`: a tick older than this means no manager
    runs (`manager_stale_after`); `consumer_stale`: a consumer heartbeat older than this is not live."""
    return (_manager(snap, now, manager_stale) or _group(snap) or _timing(snap, now)
            or _consumers(snap, now, consumer_stale))


def _reason(code: WaitCode, message: str) -> WaitReason:
    return WaitReason(code=code, message=message)


def _manager(snap: WaitSnapshot, now: float, stale: float) -> WaitReason | None:
    if snap.manager_tick_at is None:
        what = "ever run" if not snap.groups_published else "completed a tick"
        return _reason(WaitCode.NO_MANAGER, f"no manager has {what} in environment {snap.environment!r}: start "
                       "`jobqueue up` or deploy the manager")
    age = now - snap.manager_tick_at
    if age > stale:
        return _reason(WaitCode.MANAGER_STALE, f"no manager has ticked for {ago(age)} (last tick "
                       f"{clock_time(snap.manager_tick_at, now)}): start `jobqueue up` or check the manager")
    return None


def _group(snap: WaitSnapshot) -> WaitReason | None:
    g, state = snap.group, snap.state
    if state is not None and state.error:
        return _reason(WaitCode.GROUP_ERROR, f"the manager cannot scale group {g!r}: {state.error}")
    if snap.limits is None:
        return _reason(WaitCode.UNKNOWN_GROUP, f"unknown resource group {g!r}: the running manager does not serve "
                       "it (removed from its resource groups config?); add it back or cancel the job")
    if snap.limits.max_instances == 0:
        return _reason(WaitCode.MAX_INSTANCES_ZERO, f"group {g!r} has max_instances 0, so no consumer runs its "
                       "jobs: raise max_instances in the resource groups config, or cancel the job")
    return None


def _timing(snap: WaitSnapshot, now: float) -> WaitReason | None:
    if snap.due_at is not None and snap.due_at * 1000 >= HELD_SCORE_MS:
        return _reason(WaitCode.SHARD_HELD, "held: its sharded query runs at most num_workers shards at once; it is "
                       "released when a running one ends")
    if snap.due_at is not None and snap.due_at > now:
        due = clock_time(snap.due_at, now)
        return _reason(WaitCode.DEFERRED, f"deferred: it is due at {due} (in {ago(snap.due_at - now)})")
    if snap.team_limit:
        return _reason(WaitCode.TEAM_LIMIT, snap.team_limit)
    return None


def _consumers(snap: WaitSnapshot, now: float, stale: float) -> WaitReason:
    assert snap.limits is not None  # `_group` answered otherwise
    g, limits, state = snap.group, snap.limits, snap.state
    live = [c for c in snap.consumers if now - c.seen_at <= stale]
    taking = [c for c in live if not c.draining]
    room = sum(max(0, limits.jobs_per_consumer - len(c.running)) for c in taking)
    busy = sum(1 for c in live if c.running)
    ahead = _jobs(snap.jobs_ahead, "ahead of this one")
    if room > snap.jobs_ahead:
        return _reason(WaitCode.NEXT_IN_LINE, f"a consumer of group {g!r} has room: it takes this job at its next "
                       f"poll ({ahead})")
    if state is not None and state.start_trouble:
        return _reason(WaitCode.CONSUMER_START_FAILING, f"consumers of group {g!r} fail to start: "
                       f"{state.start_trouble}")
    if len(live) >= limits.max_instances:
        return _reason(WaitCode.AT_MAX_INSTANCES, f"group {g!r} is at max_instances {limits.max_instances} with "
                       f"{busy} busy consumer{'' if busy == 1 else 's'}; {ahead}")
    if state is not None and state.starting_since is not None and state.desired > len(live):
        return _reason(WaitCode.CONSUMER_STARTING, f"consumer starting (scaled up {ago(now - state.starting_since)} "
                       f"ago); {ahead}")
    return _reason(WaitCode.SCALE_UP_PENDING, f"the manager starts a consumer for group {g!r} at its next tick; "
                   f"{ahead}")


def _jobs(n: int, what: str) -> str:
    return f"{'no' if n == 0 else n} job{'' if n == 1 else 's'} {what}"


def ago(seconds: float) -> str:
    """A duration for people: `20 s`, `5 min`, `3 h`."""
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.0f} h"


def clock_time(epoch: float, now: float) -> str:
    """A moment as UTC wall-clock time (`12:03:01 UTC`); with its date when it is not within a day of `now`."""
    fmt = "%H:%M:%S UTC" if abs(now - epoch) < 86400 else "%Y-%m-%d %H:%M:%S UTC"
    return datetime.fromtimestamp(epoch, UTC).strftime(fmt)


BLOCKING = frozenset({WaitCode.NO_MANAGER, WaitCode.MANAGER_STALE, WaitCode.UNKNOWN_GROUP, WaitCode.GROUP_ERROR,
                      WaitCode.MAX_INSTANCES_ZERO, WaitCode.CONSUMER_START_FAILING, WaitCode.TEAM_LIMIT})


class WaitNotices:
    """When `wait()` tells why its job waits (`due`; `now` in monotonic seconds): a reason that needs someone to
    act (`BLOCKING`) at once, any other once it has held `grace` seconds (a cold start is no news), a new reason
    when it changes, and the current one again every `every` seconds while the job waits."""

    def __init__(self, grace: float = 10.0, every: float = 60.0) -> None:
        self.grace, self.every = grace, every
        self._code: WaitCode | None = None
        self._since = 0.0  # when the current reason was first seen
        self._told_at: float | None = None  # when it was last told; None: not yet

    def due(self, reason: WaitReason | None, now: float) -> bool:
        code = reason.code if reason is not None else None
        if code != self._code:
            self._code, self._since, self._told_at = code, now, None
        if code is None:
            return False
        if self._told_at is None:
            if code not in BLOCKING and now - self._since < self.grace:
                return False
        elif now - self._told_at < self.every:
            return False
        self._told_at = now
        return True
