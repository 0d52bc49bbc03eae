"""How jobs look in a terminal: the list (`jobqueue jobs`) and one job's card (`jobqueue jobs show`).

The list is a table when it fits the console; in a narrower one (80 columns) every job takes two lines:
id, status and times, then its group, submit time and spill. A job id and a group name are never cut.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from jobqueue.cli.layout import aligned, break_path, fits
from jobqueue.models import JobRecord
from jobqueue.sizes import format_bytes

STATUS_STYLE = {"queued": "yellow", "running": "cyan", "succeeded": "green", "failed": "red", "cancelled": "dim"}


def duration(seconds: float | None) -> str:
    """At most 6 characters: 12.3s, 4.5m, 2.0h."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    return f"{seconds / 60:.1f}m" if seconds < 3600 else f"{seconds / 3600:.1f}h"


def when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def _wait_run(r: JobRecord) -> tuple[float | None, float | None]:
    wait = (r.started_at - r.submitted_at).total_seconds() if r.started_at else None
    run = (r.finished_at - r.started_at).total_seconds() if r.finished_at and r.started_at else None
    return wait, run


def _spilled(r: JobRecord) -> str:
    return format_bytes(r.summary.spilled_bytes) if r.summary else "-"


def jobs_view(console: Console, records: list[JobRecord]) -> RenderableType:
    """The wide table if it fits the console, else two lines per job."""
    table = Table("job", "group", "status", "submitted (UTC)", "wait", "run", "attempts", "spilled", title="jobs")
    for c in table.columns[:2]:
        c.no_wrap = True
    for c in table.columns[4:]:
        c.justify = "right"
    for r in records:
        wait, run = _wait_run(r)
        table.add_row(r.job_id, r.resource_group, Text(r.status.value, STATUS_STYLE[r.status.value]),
                      when(r.submitted_at), duration(wait), duration(run), str(r.attempts), _spilled(r))
    return table if fits(console, table) else _two_lines_per_job(records)


def _two_lines_per_job(records: list[JobRecord]) -> Group:
    first = [["job", "status", "wait", "run", "attempts"]]
    second = [["  group", "submitted (UTC)", "spilled"]]
    for r in records:
        wait, run = _wait_run(r)
        first.append([r.job_id, r.status.value, duration(wait), duration(run), str(r.attempts)])
        second.append(["  " + r.resource_group, when(r.submitted_at), _spilled(r)])
    firsts, seconds = aligned(first, right=frozenset({2, 3, 4})), aligned(second, right=frozenset({2}))
    rule = "─" * max(map(len, firsts + seconds))
    lines = [Text("jobs", style="italic", justify="center"), Text(firsts[0], "bold"), Text(seconds[0], "bold"),
             Text(rule, "dim")]
    for r, one, two in zip(records, firsts[1:], seconds[1:], strict=True):
        line = Text(one)
        line.highlight_words([r.status.value], STATUS_STYLE[r.status.value])
        lines += [line, Text(two, "dim")]
    return Group(*lines)


class _Path(str):
    """A path or URI in a card: broken after slashes to fit its column, never inside a name."""


def job_card(record: JobRecord, width: int) -> Group:
    """One job, a field per line: every field of the record and of its performance summary."""
    r = record
    wait, run = _wait_run(r)
    fields: list[tuple[str, str | Text]] = [
        ("status", Text(r.status.value + (" (cancel requested)" if r.cancel_requested else ""),
                        STATUS_STYLE[r.status.value])),
        ("group", r.resource_group),
        ("attempts", f"{r.attempts} (retries allowed: {r.max_retries})"),
        ("input rows", f"{r.input_rows:,}"),
        ("output", ", ".join(r.output)),
        ("submitted", when(r.submitted_at) + " UTC"),
        ("started", f"{when(r.started_at)} UTC (waited {duration(wait)})" if r.started_at else "-"),
        ("finished", f"{when(r.finished_at)} UTC (ran {duration(run)})" if r.finished_at else "-"),
        ("deadline", when(r.completion_deadline) + " UTC" if r.completion_deadline else "-"),
        ("progress", f"{r.progress:.0%}"),
        ("consumer", r.consumer_id or "-"),
        ("result", _Path(r.result_uri) if r.result_uri else "-"),
    ]
    if r.wait_reason:  # why a queued job waits (`jobqueue.waiting`)
        fields.insert(1, ("waits", Text(r.wait_reason.message, "yellow")))
    fields += _attribution(r)
    if r.error:
        fields.append(("error", Text(r.error, "red")))
    fields += [(f"attempt {i} error", Text(e, "red")) for i, e in enumerate(r.errors, 1)]
    parts: list[RenderableType] = [Text.assemble("job ", (r.job_id, "bold")), _grid(fields, width)]
    if r.summary:
        # a field the record already showed with the same value (consumer, owner, team, ...) is not repeated
        summary = {k: v for k, v in r.summary.model_dump().items()
                   if k not in JobRecord.model_fields or getattr(r, k) != v}
        parts += [Text("performance summary", "bold"), _grid(_summary_fields(summary), width)]
    return Group(*parts)


def _attribution(r: JobRecord) -> list[tuple[str, str | Text]]:
    """Who the job is for and what it is, and the registry version it was planned against."""
    tags = ", ".join(f"{k}={v}" for k, v in r.tags.items())
    fields = [("owner", r.owner), ("team", r.team), ("tags", tags), ("query name", r.query_name),
              ("correlation id", r.correlation_id), ("priority", r.priority.value),
              ("registry", r.registry_version or "the local file")]
    return [(name, value or "-") for name, value in fields]


def _grid(fields: list[tuple[str, str | Text]], width: int) -> Table:
    """Names in a dim column, values beside them; paths broken after slashes to fit the value column."""
    value_width = max(20, width - 4 - max(len(name) for name, _ in fields))
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim", no_wrap=True)
    grid.add_column(overflow="fold")
    for name, value in fields:
        if isinstance(value, _Path):
            value = break_path(value, value_width)
        grid.add_row("  " + name, value)
    return grid


def _number(name: str, value: Any) -> str | Text:
    """A summary value for people: bytes with units, seconds to the millisecond, counts with separators."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return _Path(value) if name == "path" else str(value)
    if name.endswith("_bytes") or name.startswith("bytes_"):
        return format_bytes(value)
    if name.endswith("_seconds") or isinstance(value, float):
        return f"{value:.3f}s"
    return f"{value:,}"


def _summary_fields(summary: dict[str, Any]) -> list[tuple[str, str | Text]]:
    """Every field of the summary; a mapping (sources, stage_seconds) one entry per line, indented."""
    out: list[tuple[str, str | Text]] = []
    for name, value in summary.items():
        if not isinstance(value, dict):
            out.append((name, _number(name, value)))
            continue
        out.append((name, "-" if not value else ""))
        for key, inner in value.items():
            if isinstance(inner, dict):
                out.append(("  " + key, ""))
                out += [("    " + k, _number(k, v)) for k, v in inner.items()]
            else:
                out.append(("  " + key, _number(name, inner)))
    return out
