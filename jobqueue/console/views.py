"""What the console's pages show, worked out from records: waits, durations, sizes, times, stage bars. Pure: no I/O
(the current time is an argument)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from jobqueue.models import JobRecord, PerformanceSummary

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
