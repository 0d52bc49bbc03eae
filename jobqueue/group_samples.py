"""Each group's queue and consumers over the last hour: the samples the manager keeps in `<p>group-history:<group>`
(`manager.group_history` writes them), read for the console's sparklines.

    samples = await recent_samples(redis, keys, ["default", "gpu"], now)   # group -> samples, oldest first

A sample covers one interval of JOBQUEUE_GROUP_HISTORY_SECONDS, starting at `at`, and holds the peaks seen in it,
so a burst shorter than the interval still shows. I/O: reads Redis only.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from redis.asyncio import Redis

from jobqueue.keys import Keys

HISTORY_WINDOW_SECONDS = 3600.0  # what the console shows, and how long the manager keeps samples


@dataclass(frozen=True)
class GroupSample:
    """One interval of a group: its start (epoch seconds) and the peaks of its queue and consumers within it."""

    at: float
    ready: int = 0  # held jobs included (due, but the team runs its limit: `manager.group_history`)
    in_flight: int = 0
    deferred: int = 0
    consumers: int = 0  # live consumers (registered and heartbeating)
    busy: int = 0
    desired: int = 0

    @property
    def depth(self) -> int:
        """Jobs in the queue: ready (and held), running and deferred."""
        return self.ready + self.in_flight + self.deferred

    def peak(self, other: GroupSample) -> GroupSample:
        """This interval's sample after also seeing `other` (the same interval): the larger of each count."""
        counts = {f.name: max(getattr(self, f.name), getattr(other, f.name)) for f in fields(self) if f.name != "at"}
        return GroupSample(at=self.at, **counts)

    def to_member(self) -> str:
        """The zset member: the fields in `FIELDS` order, space-separated (parsed by the thousand for a page: far
        cheaper than JSON)."""
        return " ".join(f"{self.at:.17g}" if name == "at" else str(getattr(self, name)) for name in FIELDS)

    @classmethod
    def from_member(cls, raw: str | bytes) -> GroupSample:
        """A stored sample; `ValueError` for a member of another shape. Fields a later version appends are ignored,
        ones it lacks take their default."""
        parts = (raw.decode() if isinstance(raw, bytes) else raw).split()
        if not parts:
            raise ValueError("an empty sample")
        return cls(float(parts[0]), *(int(p) for p in parts[1:len(FIELDS)]))


FIELDS = tuple(f.name for f in fields(GroupSample))


async def recent_samples(redis: Redis, keys: Keys, groups: list[str], now: float,
                         window: float = HISTORY_WINDOW_SECONDS) -> dict[str, list[GroupSample]]:
    """The samples of each group whose interval starts within `window` seconds before `now`, oldest first."""
    async with redis.pipeline(transaction=False) as pipe:
        for group in groups:
            pipe.zrangebyscore(keys.group_history(group), now - window, "+inf")
        replies = await pipe.execute()
    out: dict[str, list[GroupSample]] = {}
    for group, members in zip(groups, replies, strict=True):
        samples = []
        for raw in members:
            try:
                samples.append(GroupSample.from_member(raw))
            except ValueError:  # a member this version cannot read: skipped, never the page
                continue
        out[group] = sorted(samples, key=lambda s: s.at)
    return out
