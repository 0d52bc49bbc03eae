"""Cursor-paginated job listings over the jobs index (`<prefix>jobs`: job id -> submission ms), newest first.

The cursor is opaque to clients (`<submission ms>_<job id>`): the last job a page looked at, so the next page
starts right after it whatever was submitted meanwhile. A page reads at most `scan_limit` records to fill itself;
one that stops there returns a cursor even when it holds fewer jobs than asked. I/O: reads Redis through the
`JobStore`, writes nothing.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime

from redis.asyncio import Redis

from jobqueue.errors import InvalidQueryError
from jobqueue.jobstore import JobStore
from jobqueue.keys import Keys
from jobqueue.models import JobRecord

BATCH = 200


@dataclass(frozen=True)
class Position:
    """Where a listing stands in the index: the last (score, job id) looked at."""

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


CURSOR_PATTERN = r"^([0-9]{1,16}(?:\.[0-9]{1,6})?)_([A-Za-z0-9][A-Za-z0-9:_.-]{0,199})$"
_CURSOR_RE = re.compile(CURSOR_PATTERN)


def _ms(when: datetime | None, default: str) -> str:
    return str(when.timestamp() * 1000) if when is not None else default


async def index_entries(redis: Redis, keys: Keys, after: Position | None, submitted_after: datetime | None,
                        submitted_before: datetime | None) -> AsyncIterator[Position]:
    """Index entries newest first, past `after`, submitted in the window (inclusive)."""
    high = _ms(submitted_before, "+inf")
    if after is not None:
        high = str(min(after.score, float(high)))
    low = _ms(submitted_after, "-inf")
    offset = 0
    while True:
        rows = await redis.zrevrangebyscore(keys.jobs_index, high, low, start=offset, num=BATCH, withscores=True)
        for member, score in rows:
            job_id = member.decode()
            # ties on the score are ordered by id, descending: skip up to and including the cursor's job
            if after is not None and score == after.score and job_id >= after.job_id:
                continue
            yield Position(score, job_id)
        if len(rows) < BATCH:
            return
        offset += BATCH


async def find_jobs(store: JobStore, redis: Redis, keys: Keys, wanted: Callable[[JobRecord], bool], limit: int,
                    cursor: str | None, submitted_after: datetime | None, submitted_before: datetime | None,
                    scan_limit: int) -> tuple[list[JobRecord], str | None]:
    """Up to `limit` records that `wanted` accepts, and the cursor of the next page (None: no more)."""
    after = Position.decode(cursor) if cursor else None
    found: list[JobRecord] = []
    batch: list[Position] = []
    scanned = 0
    last: Position | None = None

    async def take(positions: list[Position]) -> bool:
        """Add the wanted records of `positions`; True once the page is full (then `last` is where it ended)."""
        nonlocal last
        records = await asyncio.gather(*(store.get(p.job_id) for p in positions))
        for position, record in zip(positions, records, strict=True):
            last = position
            if record is not None and wanted(record):  # the index outlives expired records
                found.append(record)
                if len(found) >= limit:
                    return True
        return False

    async for position in index_entries(redis, keys, after, submitted_after, submitted_before):
        batch.append(position)
        scanned += 1
        if len(batch) >= min(BATCH, max(limit, 20)) or scanned >= scan_limit:
            if await take(batch):
                return found, last.encode() if last else None
            batch = []
        if scanned >= scan_limit:
            return found, last.encode() if last else None
    if batch and await take(batch):
        return found, last.encode() if last else None
    return found, None


async def all_jobs(store: JobStore, redis: Redis, keys: Keys, wanted: Callable[[JobRecord], bool],
                   submitted_after: datetime | None, submitted_before: datetime | None) -> AsyncIterator[JobRecord]:
    """Every record `wanted` accepts, newest first (cancel by filter)."""
    batch: list[Position] = []

    async def records(positions: list[Position]) -> list[JobRecord]:
        got = await asyncio.gather(*(store.get(p.job_id) for p in positions))
        return [r for r in got if r is not None and wanted(r)]

    async for position in index_entries(redis, keys, None, submitted_after, submitted_before):
        batch.append(position)
        if len(batch) >= BATCH:
            for record in await records(batch):
                yield record
            batch = []
    for record in await records(batch):
        yield record
