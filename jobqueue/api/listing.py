"""Job listings: the I/O edge of `jobqueue.listing_plan`. It counts the candidate indexes, asks the planner which to
walk, and runs the plan: batches of index entries, checked against the other indexes (ZMSCORE), then their records,
each checked again (the indexes outlive expired records, and the policy is decided on the record).

The cursor is opaque to clients (`<score>_<job id>`, the score being what the listing is ordered by): the last job a
page looked at, so the next page starts right after it whatever was submitted meanwhile. A page looks at most at
`scan_limit` index entries; one that stops there returns a cursor even when it holds fewer jobs than asked. Reads
only; writes nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

from redis.asyncio import Redis

from jobqueue.jobstore import JobStore
from jobqueue.keys import Keys
from jobqueue.listing_plan import (
    CURSOR_PATTERN,
    ListingQuery,
    Plan,
    PlanKind,
    Position,
    in_window,
    make_plan,
    next_bounds,
    order_gathered,
    past,
    score_text,
    size_reads,
)
from jobqueue.models import JobRecord, JobStatus

__all__ = ["CURSOR_PATTERN", "Position", "all_matching", "count_matching", "find_page", "plan_listing"]
Check = Callable[[JobRecord], bool]
CANCELLABLE = (JobStatus.QUEUED, JobStatus.RUNNING)


async def plan_listing(redis: Redis, keys: Keys, query: ListingQuery) -> Plan:
    reads = size_reads(keys, query)
    low, high = (score_text(v) for v in query.window)
    counts: list[Any] = []
    if reads:
        async with redis.pipeline(transaction=False) as pipe:
            for key in reads:
                pipe.zcount(key, low, high)
            counts = await pipe.execute()
    return make_plan(keys, query, {k: int(c) for k, c in zip(reads, counts, strict=True)})


async def _checked(redis: Redis, plan: Plan, positions: list[Position]) -> list[Position]:
    """The positions whose job is in every index of `members_of`, in one of `members_of_any` (when any), in none of
    `not_members_of` (and submitted in the window, when asked)."""
    checks = [*plan.members_of, *plan.members_of_any, *plan.not_members_of,
              *([plan.window_of] if plan.window_of else [])]
    if not positions or not checks:
        return positions
    ids = [p.job_id for p in positions]
    async with redis.pipeline(transaction=False) as pipe:
        for key in checks:
            pipe.zmscore(key, ids)
        replies = await pipe.execute()
    n_in, n_any, n_out = len(plan.members_of), len(plan.members_of_any), len(plan.not_members_of)
    member_replies, any_replies = replies[:n_in], replies[n_in:n_in + n_any]
    excluded_replies = replies[n_in + n_any:n_in + n_any + n_out]
    window_scores = replies[n_in + n_any + n_out] if plan.window_of else None
    return [p for i, p in enumerate(positions)
            if all(r[i] is not None for r in member_replies)
            and (not any_replies or any(r[i] is not None for r in any_replies))
            and all(r[i] is None for r in excluded_replies)
            and (window_scores is None or in_window(plan.window, window_scores[i]))]


async def _walk(redis: Redis, plan: Plan, key: str) -> AsyncIterator[tuple[list[Position], Position]]:
    """WALK: batches of `key`'s entries in the plan's order within its bounds (those past its cursor), with the last
    entry walked."""
    low, high, after, offset = plan.low, plan.high, plan.after, 0
    while True:
        if plan.descending:
            rows = await redis.zrevrangebyscore(key, score_text(high), score_text(low), start=offset,
                                                num=plan.batch, withscores=True)
        else:
            rows = await redis.zrangebyscore(key, score_text(low), score_text(high), start=offset,
                                             num=plan.batch, withscores=True)
        walked = [Position(float(score), member.decode()) for member, score in rows]
        if not walked:
            return
        yield [p for p in walked if past(plan, p, after)], walked[-1]
        if len(walked) < plan.batch:
            return
        if after is not None and walked[0].score == walked[-1].score == after.score:
            offset += plan.batch  # a run of ties longer than a batch: step through it
        else:
            after, offset = walked[-1], 0
            low, high = next_bounds(plan, after)


async def _entries(redis: Redis, plan: Plan, key: str) -> AsyncIterator[Position]:
    async for fresh, _ in _walk(redis, plan, key):
        for position in fresh:
            yield position


async def _union_walk(redis: Redis, plan: Plan) -> AsyncIterator[tuple[list[Position], Position]]:
    """WALK over `walk_any`: their entries merged in the plan's order, each job once (a job in several indexes has
    the same score, its submission ms, in each: its entries meet side by side), in batches of `plan.batch`."""
    streams = [_entries(redis, plan, key) for key in plan.walk_any]
    heads: dict[int, Position] = {}  # stream -> its next entry
    for i, stream in enumerate(streams):
        if (first := await anext(stream, None)) is not None:
            heads[i] = first
    batch: list[Position] = []
    last: Position | None = None
    while heads:
        pick = (max if plan.descending else min)(heads, key=lambda i: (heads[i].score, heads[i].job_id))
        position = heads.pop(pick)
        if (following := await anext(streams[pick], None)) is not None:
            heads[pick] = following
        if position == last:
            continue
        batch.append(position)
        last = position
        if len(batch) >= plan.batch:
            yield batch, position
            batch = []
    if batch:
        yield batch, batch[-1]


async def candidates(redis: Redis, plan: Plan) -> AsyncIterator[tuple[list[Position], Position]]:
    """Batches of (positions that pass every index check, the last position walked), in the plan's order."""
    if plan.kind is PlanKind.EMPTY:
        return
    if plan.kind is PlanKind.GATHER:
        async with redis.pipeline(transaction=False) as pipe:
            for key in plan.walk_any or (plan.walk,):
                pipe.zrangebyscore(key, score_text(plan.low), score_text(plan.high))
            replies = await pipe.execute()
        ids = list(dict.fromkeys(m.decode() for members in replies for m in members))  # a union: each job once
        if not ids or plan.order_by is None:
            return
        scores = await redis.zmscore(plan.order_by, ids)
        kept = await _checked(redis, plan, order_gathered(plan, list(zip(ids, scores, strict=True))))
        for start in range(0, len(kept), plan.batch):
            chunk = kept[start:start + plan.batch]
            yield chunk, chunk[-1]
        return
    walked = _union_walk(redis, plan) if plan.walk_any else _walk(redis, plan, plan.walk)
    async for fresh, last in walked:
        yield await _checked(redis, plan, fresh), last


def _record_check(query: ListingQuery, check: Check) -> Check:
    low, high = query.window

    def ok(r: JobRecord) -> bool:
        submitted = r.submitted_at.timestamp() * 1000
        return query.wanted.matches(r) and low <= submitted <= high and check(r)

    return ok


async def find_page(store: JobStore, redis: Redis, keys: Keys, query: ListingQuery, check: Check,
                    scan_limit: int) -> tuple[list[JobRecord], str | None]:
    """Up to `query.limit` records in the query's order that match it and `check` (the policy), and the cursor of
    the next page (None: no more)."""
    plan = await plan_listing(redis, keys, query)
    ok = _record_check(query, check)
    found: list[JobRecord] = []
    scanned = 0
    async for kept, walked_last in candidates(redis, plan):
        scanned += plan.batch
        start = 0
        while start < len(kept):
            chunk = kept[start:start + max(query.limit - len(found), 10)]
            start += len(chunk)
            for position, record in zip(chunk, await store.get_many([p.job_id for p in chunk]), strict=True):
                if record is not None and ok(record):
                    found.append(record)
                    if len(found) >= query.limit:
                        return found, position.encode()
        if scanned >= scan_limit:
            return found, walked_last.encode()
    return found, None


async def all_matching(store: JobStore, redis: Redis, keys: Keys, query: ListingQuery,
                       check: Check) -> AsyncIterator[JobRecord]:
    """Every record that matches the query and `check`, in its order (cancel by filter)."""
    ok = _record_check(query, check)
    async for kept, _ in candidates(redis, await plan_listing(redis, keys, query)):
        for record in await store.get_many([p.job_id for p in kept]):
            if record is not None and ok(record):
                yield record


def cancellable_queries(query: ListingQuery) -> list[ListingQuery]:
    """The query narrowed to the states a cancel acts on (queued, running): one query per state."""
    states = [s for s in CANCELLABLE if query.wanted.state in (None, s)]
    return [replace(query, wanted=replace(query.wanted, state=s)) for s in states]


async def count_matching(store: JobStore, redis: Redis, keys: Keys, query: ListingQuery,
                         check: Check | None) -> int:
    """How many jobs match the query: from the indexes alone when `check` is None (the conditions are all indexed),
    else reading each record for `check`."""
    if check is not None:
        return sum([1 async for _ in all_matching(store, redis, keys, query, check)])
    total = 0
    async for kept, _ in candidates(redis, await plan_listing(redis, keys, query)):
        total += len(kept)
    return total
