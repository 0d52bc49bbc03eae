"""What the console's pages show, worked out from records: waits, durations, sizes, times, stage bars. Pure: no I/O
(the current time is an argument)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from jobqueue.models import JobRecord, JobStatus, PerformanceSummary

UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def duration(seconds: float | None) -> str:
    """`850 ms`, `12.3 s`, `4 min 05 s`, `2 h 03 min`; an em dash for none."""
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def size(n: int | None) -> str:
    """Bytes in binary units, with the exact count when it is not whole bytes: `0 B`, `1.5 MiB`."""
    if n is None:
        return "—"
    value, unit = float(n), 0
    while value >= 1024 and unit < len(UNITS) - 1:
        value, unit = value / 1024, unit + 1
    return f"{n} B" if unit == 0 else f"{value:.1f} {UNITS[unit]}"


def when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment is not None else "—"


def wait_seconds(record: JobRecord, now: datetime) -> float | None:
    """How long the job waited (or has waited so far) to start; None for a job cancelled before it ran."""
    if record.started_at is not None:
        return max(0.0, (record.started_at - record.submitted_at).total_seconds())
    if record.status.is_final:
        return None
    return max(0.0, (now - record.submitted_at).total_seconds())


def run_seconds(record: JobRecord, now: datetime) -> float | None:
    """How long the job ran (or has run so far); None before it started."""
    if record.started_at is None:
        return None
    end = record.finished_at or (None if record.status.is_final else now)
    return max(0.0, (end - record.started_at).total_seconds()) if end is not None else None


@dataclass(frozen=True)
class Stage:
    name: str
    seconds: float
    share: float  # of the longest stage, 0..1: the bar's length


def stages(summary: PerformanceSummary | None) -> list[Stage]:
    """The summary's per-stage times, in their order, each with its bar length against the longest."""
    if summary is None or not summary.stage_seconds:
        return []
    longest = max(summary.stage_seconds.values()) or 1.0
    return [Stage(name, seconds, seconds / longest) for name, seconds in summary.stage_seconds.items()]


@dataclass(frozen=True)
class Attempt:
    number: int
    started_at: datetime | None
    ended_at: datetime | None
    seconds: float | None  # how long it ran (so far, while it runs)
    outcome: str  # running, succeeded, failed, cancelled, expired, or `requeued` (given back to the queue)
    error: str | None


@dataclass(frozen=True)
class Step:
    """One point of a job's timeline: `submitted`, `queued`, `attempt`, or the final state."""

    kind: str
    label: str
    at: datetime | None
    seconds: float | None  # the wait (queued) or the run (an attempt)
    attempt: Attempt | None = None
    current: bool = False


def attempts(record: JobRecord, now: datetime) -> list[Attempt]:
    """Each attempt with its start, end and error, oldest first. Records written before attempt times were kept
    have only the last attempt's start (`started_at`); earlier attempts then show no times."""
    starts: list[datetime | None] = list(record.attempt_starts)
    count = max(len(starts), record.attempts)
    if not starts and count:  # an older record: only the last attempt's start is known
        starts = [*([None] * (count - 1)), record.started_at]
    starts += [None] * (count - len(starts))
    ends: list[datetime | None] = list(record.attempt_ends)
    found: list[Attempt] = []
    for i, start in enumerate(starts):
        last = i == count - 1
        end = ends[i] if i < len(ends) else (record.finished_at if last else None)
        if last and record.status.is_final:
            outcome = record.status.value
        elif last and record.status is JobStatus.RUNNING:
            outcome = "running"
        else:
            outcome = "requeued"
        error = record.errors[i] if i < len(record.errors) else None
        if error is None and last and outcome in ("failed", "expired"):
            error = record.error
        stop = end or (now if outcome == "running" else None)
        seconds = max(0.0, (stop - start).total_seconds()) if start is not None and stop is not None else None
        found.append(Attempt(i + 1, start, end, seconds, outcome, error))
    return found


def timeline(record: JobRecord, now: datetime) -> list[Step]:
    """submitted → queued (its wait) → each attempt → the final state, the current step marked."""
    tried = attempts(record, now)
    first_start = tried[0].started_at if tried else None
    queued_until = first_start or (record.finished_at if record.status.is_final else now)
    waiting = record.status is JobStatus.QUEUED
    steps = [Step("submitted", "submitted", record.submitted_at, None),
             Step("queued", "queued", record.submitted_at,
                  max(0.0, (queued_until - record.submitted_at).total_seconds()) if queued_until else None,
                  current=waiting and not tried)]
    for a in tried:
        steps.append(Step("attempt", f"attempt {a.number}", a.started_at, a.seconds, a,
                          current=a.outcome == "running"))
    if tried and waiting:  # given back to the queue: waits again for its next attempt
        steps.append(Step("queued", "queued again", tried[-1].ended_at, None, current=True))
    if record.status.is_final:
        steps.append(Step("final", record.status.value, record.finished_at, None, current=True))
    return steps


def share(part: int, whole: int) -> float:
    """`part` of `whole` as 0..1 for a bar (0 when there is no whole)."""
    return min(1.0, part / whole) if whole > 0 else 0.0
