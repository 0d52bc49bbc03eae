"""What the listing indexes hold for a job, as the JSON arguments of `JobStore`'s scripts. Pure, no I/O.

Every job is in `<p>jobs` (all jobs) and in one `<p>jobs-by:<kind>:<value>` zset per attribute it has (owner, team,
group, query name, each tag; a shard of a sharded query: its parent's, and `kind:shard`, the index of every shard,
which listings leave out unless asked) and in the one of its state, all scored by its submission ms; a job that
started is in `<p>jobs-by-wait` (ms from submission to the first start), and one that finished after starting in
`<p>jobs-by-duration` (ms from that start to the finish). `jobqueue.listing_plan` reads them.
"""

from __future__ import annotations

import json
from functools import cache

from jobqueue.keys import Keys, ListingIndex, tag_value
from jobqueue.models import JobRecord, JobStatus


def attribute_indexes(keys: Keys, record: JobRecord) -> list[str]:
    """The indexes of a job's fixed attributes (never changed after submission): owner, team, group, query, tags, and
    a shard's parent and kind."""
    found = [keys.jobs_by(ListingIndex.GROUP, record.resource_group)]
    if record.parent_id:
        found += [keys.jobs_by(ListingIndex.PARENT, record.parent_id), keys.shard_jobs]
    if record.owner:
        found.append(keys.jobs_by(ListingIndex.OWNER, record.owner))
    if record.team:
        found.append(keys.jobs_by(ListingIndex.TEAM, record.team))
    if record.query_name:
        found.append(keys.jobs_by(ListingIndex.QUERY, record.query_name))
    found += [keys.jobs_by(ListingIndex.TAG, tag_value(k, v)) for k, v in sorted(record.tags.items())]
    return found


def _ms(record: JobRecord) -> float:
    return record.submitted_at.timestamp() * 1000


def timings_ms(record: JobRecord) -> tuple[float | None, float | None]:
    """(wait, duration) in ms as the indexes score them: wait from submission to the start, duration from the start
    to the finish, in whole ms as the scripts score them (None: not started / not finished after starting)."""
    if record.started_at is None:
        return None, None
    wait = max(0.0, round((record.started_at - record.submitted_at).total_seconds() * 1000))
    if record.finished_at is None or not record.status.is_final:
        return wait, None
    return wait, max(0.0, round((record.finished_at - record.started_at).total_seconds() * 1000))


def submit_listing(keys: Keys, record: JobRecord, with_state: bool = True) -> str:
    """`SUBMIT`'s listing-index argument (and `INDEX_JOB`'s, without the state): the job's attribute indexes and state
    index with its submission ms, its wait and duration when it has them, and the per-value keys to list."""
    submitted = repr(_ms(record))  # as text: a Lua number would be written with 14 digits only
    listed = attribute_indexes(keys, record)
    add: list[tuple[str, str]] = [(k, submitted) for k in listed]
    if with_state:
        add.append((keys.jobs_by(ListingIndex.STATE, record.status.value), submitted))
    wait, ran = timings_ms(record)
    if wait is not None:
        add.append((keys.jobs_by_wait, repr(wait)))
    if ran is not None:
        add.append((keys.jobs_by_duration, repr(ran)))
    return json.dumps({"add": add, "set": keys.listing_indexes, "listed": listed})


@cache
def _relist_head(keys: Keys) -> str:
    fixed = {"jobs": keys.jobs_index, "state": keys.jobs_by_state(), "running": JobStatus.RUNNING.value,
             "final": {s.value: True for s in JobStatus if s.is_final}, "wait": keys.jobs_by_wait,
             "duration": keys.jobs_by_duration}
    return json.dumps(fixed)[:-1]


def relist_json(keys: Keys, now_ms: float) -> str:
    """The listing-index argument of `TRANSITION`, `CLAIM` and `REQUEST_CANCEL` (see `store_scripts.relist`)."""
    return f'{_relist_head(keys)}, "now": {now_ms!r}}}'
