"""The manager's ring buffer of per-group samples (`<p>group-history:<group>`, read by `jobqueue.group_samples`):
the console's sparklines of queue depth and consumers over the last hour.

    history = GroupHistory(keys, interval_seconds=10)
    history.record(pipe, {"default": state, ...}, now)   # each tick, in the tick's pipeline

Time is cut into intervals of JOBQUEUE_GROUP_HISTORY_SECONDS; a group's sample of an interval holds the peaks of its
counts seen in it. Level-triggered and bounded: every tick compares what it sees with the interval's sample and
writes only when a peak grew or a new interval began (a steady group writes once per interval); the sample of an
interval replaces whatever was stored for that interval (a restarted or second manager never adds a duplicate);
samples older than the window are trimmed at each write, and a group's key expires when nobody writes it any more.
"""

from __future__ import annotations

import math
from typing import Any

from jobqueue.group_samples import HISTORY_WINDOW_SECONDS, GroupSample
from jobqueue.keys import GroupState, Keys


class GroupHistory:
    def __init__(self, keys: Keys, interval_seconds: float, window_seconds: float = HISTORY_WINDOW_SECONDS) -> None:
        self.keys = keys
        self.interval = interval_seconds
        self.window = window_seconds
        self._current: dict[str, GroupSample] = {}  # group -> the sample of its current interval, as last written

    def interval_of(self, now: float) -> float:
        return math.floor(now / self.interval) * self.interval

    def sample(self, name: str, state: GroupState, now: float) -> GroupSample | None:
        """The sample to write for `name` now, or None when the stored one already holds what is seen."""
        # jobs held by their team's limit wait as ready ones do: the history's queue depth counts them
        seen = GroupSample(at=self.interval_of(now), ready=state.ready + state.held, in_flight=state.in_flight,
                           deferred=state.deferred, consumers=state.live, busy=state.busy, desired=state.desired)
        stored = self._current.get(name)
        if stored is not None and stored.at == seen.at:
            merged = stored.peak(seen)
            if merged == stored:
                return None
            seen = merged
        self._current[name] = seen
        return seen

    def record(self, pipe: Any, states: dict[str, GroupState], now: float) -> int:
        """Queue the writes of this tick's samples on `pipe` (a Redis pipeline); how many groups it writes."""
        written = 0
        for name, state in states.items():
            sample = self.sample(name, state, now)
            if sample is None:
                continue
            key = self.keys.group_history(name)
            pipe.zremrangebyscore(key, sample.at, sample.at)  # this interval's earlier sample, if any
            pipe.zadd(key, {sample.to_member(): sample.at})
            pipe.zremrangebyscore(key, "-inf", f"({now - self.window - self.interval}")
            pipe.expire(key, math.ceil(self.window + 2 * self.interval))
            written += 1
        for name in [n for n in self._current if n not in states]:  # a group gone: its key expires by itself
            del self._current[name]
        return written
