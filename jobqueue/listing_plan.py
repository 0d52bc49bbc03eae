"""How to list jobs: which listing index to walk, which to check each job against, and in what order. Pure, no I/O.

The indexes (`jobqueue.listing_index`) are zsets of job ids: one per value of each attribute and state, scored by
submission ms, plus the jobs by wait and by duration. A listing is planned in two steps, both pure:

    reads = size_reads(keys, query)            # the edge counts each index in the time window (ZCOUNT)
    plan = make_plan(keys, query, sizes)       # then walks `plan.walk`, checks `plan.members_of`, reads records

Sorted by submission, the smallest index that every listed job must be in is walked in order, and the others are
checked for each batch (ZMSCORE), as is the index of every shard (`Keys.shard_jobs`: a job in it is left out)
unless the query lists shards (`JobFilter.lists_shards`). Sorted by wait or duration, that index is walked instead,
unless a filter's index is small enough to read whole (`GATHER_MAX`) and sort. A `user` who sees only their own jobs
always has their owner index as a condition, so the policy also narrows the reads. One who also sees their team's
(JOBQUEUE_USERS_SEE_TEAM_JOBS) sees the union of their owner index and their team's (`visibility`): that union is
walked (merged in order, each job once) when it is smaller than every filter's index, and else each job is checked
to be in one of the two; either way a listing reads only records the user may see. The edge checks every record
again.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from jobqueue.errors import InvalidQueryError
from jobqueue.job_filter import JobFilter
from jobqueue.keys import Keys, ListingIndex, tag_value

GATHER_MAX = 5000  # a filter index this small is read whole when sorting by wait or duration
CURSOR_PATTERN = r"^([0-9]{1,16}(?:\.[0-9]{1,6})?)_([A-Za-z0-9][A-Za-z0-9:_.-]{0,199})$"
_CURSOR_RE = re.compile(CURSOR_PATTERN)


class SortKey(enum.StrEnum):
    SUBMITTED = "submitted"
    WAIT = "wait"  # jobs that started: submission to the first start
    DURATION = "duration"  # jobs that finished after starting: first start to the finish


@dataclass(frozen=True)
class Position:
    """Where a listing stands in the index it is ordered by: the last (score, job id) looked at."""

    score: float
    job_id: str

    def encode(self) -> str:
        return f"{self.score!r}_{self.job_id}"

    @classmethod
    def decode(cls, text: str) -> Position:
        """Any text of `CURSOR_PATTERN` is a position (so the schema says exactly which cursors are valid)."""
        m = _CURSOR_RE.match(text)
        if not m:
            raise InvalidQueryError("cursor", "is not a cursor this API gave out; pass `next_cursor` of the "
                                    "previous page unchanged, or leave it out for the first page")
        return cls(float(m.group(1)), m.group(2))


@dataclass(frozen=True)
class ListingQuery:
    wanted: JobFilter = field(default_factory=JobFilter)
    submitted_after_ms: float | None = None  # inclusive
    submitted_before_ms: float | None = None  # inclusive
    sort: SortKey = SortKey.SUBMITTED
    descending: bool = True
    after: Position | None = None
    limit: int = 50
    only_owner: str | None = None  # the policy: a `user` sees only this owner's jobs ...
    also_team: str | None = None  # ... and, with JOBQUEUE_USERS_SEE_TEAM_JOBS, this team's too (with only_owner)

    @property
    def window(self) -> tuple[float, float]:
        low = self.submitted_after_ms if self.submitted_after_ms is not None else -math.inf
        high = self.submitted_before_ms if self.submitted_before_ms is not None else math.inf
        return low, high


class PlanKind(enum.Enum):
    EMPTY = "empty"  # nothing can match: no reads
    WALK = "walk"  # walk `walk` in order, batch by batch
    GATHER = "gather"  # read `walk` whole in the window, order by `order_by`


@dataclass(frozen=True)
class Plan:
    kind: PlanKind
    walk: str = ""
    walk_any: tuple[str, ...] = ()  # when set: walk (or gather) the union of these instead of `walk`
    descending: bool = True
    low: float = -math.inf  # score bounds of the walked index (inclusive)
    high: float = math.inf
    after: Position | None = None  # entries up to this one (in walking order) are skipped
    members_of: tuple[str, ...] = ()  # a job must be in each (ZMSCORE)
    members_of_any: tuple[str, ...] = ()  # and, when set, in at least one of these
    not_members_of: tuple[str, ...] = ()  # and in none of these
    window_of: str | None = None  # when set, a job's score there (submission ms) must be in `window`
    window: tuple[float, float] = (-math.inf, math.inf)
    order_by: str | None = None  # GATHER: the index whose score orders the jobs
    limit: int = 50
    batch: int = 200


def conditions(keys: Keys, query: ListingQuery) -> list[str] | None:
    """The indexes every listed job must be in; None when no job can match (a `user` asking for another owner)."""
    w = query.wanted
    owner = w.owner
    if query.only_owner is not None and query.also_team is None:
        if owner is not None and owner != query.only_owner:
            return None
        owner = query.only_owner
    elif query.only_owner is not None and owner not in (None, query.only_owner) \
            and w.team not in (None, query.also_team):
        return None  # another owner's jobs of another team
    found = []
    for kind, value in ((ListingIndex.PARENT, w.parent), (ListingIndex.OWNER, owner), (ListingIndex.TEAM, w.team),
                        (ListingIndex.GROUP, w.group), (ListingIndex.QUERY, w.query_name),
                        (ListingIndex.STATE, w.state.value if w.state is not None else None)):
        if value is not None:
            found.append(keys.jobs_by(kind, value))
    found += [keys.jobs_by(ListingIndex.TAG, tag_value(k, v)) for k, v in sorted(w.tags.items())]
    return found


def exclusions(keys: Keys, query: ListingQuery) -> tuple[str, ...]:
    """The indexes no listed job may be in: every shard's, unless the query lists shards."""
    return () if query.wanted.lists_shards else (keys.shard_jobs,)


def visibility(keys: Keys, query: ListingQuery) -> tuple[str, ...]:
    """The indexes a listed job must be in at least one of: for a `user` who also sees their team's jobs, their owner
    index and their team's; none when a condition already narrows the listing to one of them, or for anyone else."""
    w = query.wanted
    if query.only_owner is None or query.also_team is None or query.only_owner == w.owner \
            or query.also_team == w.team:
        return ()
    return keys.jobs_by(ListingIndex.OWNER, query.only_owner), keys.jobs_by(ListingIndex.TEAM, query.also_team)


def size_reads(keys: Keys, query: ListingQuery) -> list[str]:
    """The indexes whose size in the window (ZCOUNT over `query.window`) the plan needs."""
    return [*(conditions(keys, query) or []), *visibility(keys, query)]


def _bounds(low: float, high: float, descending: bool, after: Position | None) -> tuple[float, float]:
    if after is None:
        return low, high
    return (low, min(high, after.score)) if descending else (max(low, after.score), high)


def make_plan(keys: Keys, query: ListingQuery, sizes: Mapping[str, int]) -> Plan:
    """The plan for `query`, given the size in the window of each index of `size_reads`."""
    conds = conditions(keys, query)
    visible = visibility(keys, query)
    any_of = tuple(k for k in visible if sizes.get(k, 0) > 0)
    low, high = query.window
    if conds is None or low > high or any(sizes.get(k, 0) == 0 for k in conds) or (visible and not any_of):
        return Plan(PlanKind.EMPTY, limit=query.limit)
    smallest = min(conds, key=lambda k: (sizes[k], k)) if conds else None
    union = sum(sizes[k] for k in any_of)
    base = Plan(PlanKind.WALK, descending=query.descending, after=query.after, not_members_of=exclusions(keys, query),
                limit=query.limit, batch=max(100, min(500, query.limit * 2)))
    source_size: int | None
    if any_of and (smallest is None or union < sizes[smallest]):  # fewer visible jobs than any filter's: walk them
        source, source_size = replace(base, walk_any=any_of, members_of=tuple(conds)), union
    else:
        source = replace(base, walk=smallest or keys.jobs_index, members_of=tuple(k for k in conds if k != smallest),
                         members_of_any=any_of)
        source_size = sizes[smallest] if smallest is not None else None
    if query.sort is SortKey.SUBMITTED:
        lo, hi = _bounds(low, high, query.descending, query.after)
        return replace(source, low=lo, high=hi)
    order = keys.jobs_by_wait if query.sort is SortKey.WAIT else keys.jobs_by_duration
    if source_size is not None and source_size <= GATHER_MAX:
        return replace(source, kind=PlanKind.GATHER, low=low, high=high, order_by=order)
    lo, hi = _bounds(-math.inf, math.inf, query.descending, query.after)
    windowed = (low, high) != (-math.inf, math.inf)
    return replace(base, walk=order, low=lo, high=hi, members_of=tuple(conds), members_of_any=any_of,
                   window_of=keys.jobs_index if windowed else None, window=(low, high))


def score_text(value: float, exclusive: bool = False) -> str:
    """A zset score bound as Redis reads it."""
    if math.isinf(value):
        return "+inf" if value > 0 else "-inf"
    return f"({value!r}" if exclusive else repr(value)


def past(plan: Plan, position: Position, after: Position | None) -> bool:
    """Whether `position` comes after `after` in the plan's order (ties on the score go by job id, as Redis orders
    them: descending with the scores when walking down)."""
    if after is None:
        return True
    if plan.descending:
        return (position.score, position.job_id) < (after.score, after.job_id)
    return (position.score, position.job_id) > (after.score, after.job_id)


def in_window(window: tuple[float, float], score: float | None) -> bool:
    return score is not None and window[0] <= score <= window[1]


def order_gathered(plan: Plan, rows: Sequence[tuple[str, float | None]]) -> list[Position]:
    """GATHER: the jobs (id, score in `order_by`) that have a score, in the plan's order, past its cursor."""
    ordered = sorted((Position(score, job_id) for job_id, score in rows if score is not None),
                     key=lambda p: (p.score, p.job_id), reverse=plan.descending)
    return [p for p in ordered if past(plan, p, plan.after)]


def next_bounds(plan: Plan, last: Position) -> tuple[float, float]:
    """WALK: the bounds of the next batch after `last` (inclusive of its score; `past` skips the ties seen)."""
    return _bounds(plan.low, plan.high, plan.descending, last)
