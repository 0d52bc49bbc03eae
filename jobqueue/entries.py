"""Queue entries: which ones may reach arq, and the one way to reject the others.

An entry is a member of `<p>queue:<group>` (an arq id, `<p><job id>`), its score (due time in ms)
and arq's envelope at `arq:job:<arq id>`. Anyone who can write to Redis can write any of them, so a
consumer checks all three before arq sees the entry (`entry_problem`, pure), and the manager looks
for entries that could never become due. An entry that fails is rejected once (`reject`): its record,
if any, becomes `failed` with the reason, its queue entry and arq keys are removed, its staged input is
deleted, and one line is logged with the job id.
"""

from __future__ import annotations

import math
from typing import Any

from jobqueue import serializer
from jobqueue.jobstore import JobStore
from jobqueue.keys import ARQ_FUNCTION, Keys
from jobqueue.logs import capped, get_logger
from jobqueue.storage import Storage

log = get_logger("jobqueue.entries")

MAX_TIME_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, the last instant a Python datetime holds
MAX_TRIES = 10_000  # arq's max_tries for our function; a job try at or above it would be refused by arq


def score_problem(raw: bytes | str | float) -> str | None:
    """Why a queue score is not a due time (ms since the epoch, 0 .. year 9999), or None."""
    try:
        score = float(raw)
    except (TypeError, ValueError):
        return f"queue score {raw!r} is not a number"
    if not math.isfinite(score) or not 0 <= score <= MAX_TIME_MS:
        return f"queue score {score!r} is not a time in milliseconds (0 to {MAX_TIME_MS})"
    return None


def envelope_problem(raw: bytes | None) -> str | None:
    """Why arq's job envelope would be refused or fail in arq itself, or None."""
    if raw is None:
        return "its arq job is missing (expired, or never written)"
    try:
        data = serializer.loads(raw)
    except serializer.PayloadError as e:
        return f"undecodable arq job: {e}"
    if data["f"] != ARQ_FUNCTION:
        return f"unknown function {data['f']!r}"
    if data["a"] or set(data["k"]) != {"job"}:
        return f"unexpected arguments: {len(data['a'])} positional, keywords {sorted(data['k'])} (expected job=)"
    t, et = data["t"], data["et"]
    if t is not None and not 0 <= t < MAX_TRIES:
        return f"job try t={t} is outside 0..{MAX_TRIES - 1}"
    if not 0 <= et <= MAX_TIME_MS:
        return f"enqueue time et={et} is not a time in milliseconds (0 to {MAX_TIME_MS})"
    return None


def entry_problem(keys: Keys, member: str, score: bytes | str | float, envelope: bytes | None) -> str | None:
    """Why this queue entry must not reach arq, or None: a member of another environment, a score that
    is not a time, or an envelope arq would refuse (or crash on)."""
    if keys.job_id_of(member) is None:
        return f"queue member {member!r} is not a job of this environment (expected {keys.prefix}<job id>)"
    return score_problem(score) or envelope_problem(envelope)


async def reject(
    keys: Keys, store: JobStore, storage: Storage | None, group: str, member: str, reason: str, **log_fields: Any
) -> None:
    """Reject one queue entry: record `failed` with `reason` (if queued or running), queue entry and arq keys
    removed, staged input deleted, one log line. Only this environment's arq keys are touched."""
    reason = capped(reason)
    job_id = keys.job_id_of(member)
    if job_id is not None:
        await store.mark_failed(job_id, f"rejected queue entry: {reason}")
    await store.remove_entry(group, member)
    if job_id is not None and storage is not None:
        await storage.discard_job_files(job_id)
    log.error("queue entry rejected", job_id=job_id or capped(member, 256), resource_group=group, reason=reason,
              **log_fields)
