"""`jobqueue status`: each group's bounds, consumers and queue, with the manager's last decision."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from jobqueue.api.wire import HELD_MEANING
from jobqueue.cli.layout import aligned, fits
from jobqueue.settings import Settings


def _age(seconds: float) -> str:
    return f"{seconds:.1f}s" if seconds < 120 else f"{seconds / 60:.0f} min"


async def read_status(settings: Settings, api_url: str | None = None, token: str | None = None
                      ) -> list[dict[str, Any]]:
    """Each group's row (`GET /v1/groups`, or Redis in the direct mode), as `jobqueue status --json` prints it."""
    from jobqueue.client import AsyncJobQueueClient

    async with AsyncJobQueueClient(settings, api_url=api_url, token=token) as client:
        return [g.model_dump(mode="json") for g in await client.groups()]


CAPTION = ("consumers: desired, current (asked for), live (fresh heartbeat), busy (holding a job); "
           f"jobs: ready (due, not running), held ({HELD_MEANING}), in flight, deferred")


def render_status(rows: list[dict[str, Any]], console: Console) -> Group:
    """The table if it fits the console, else a card per group (in 80 columns); then the manager's line and
    each group's detail, error and start trouble. A group name is never cut."""
    table = Table("group", "min", "max", "desired", "current", "live", "busy", "ready", "held", "in flight",
                  "deferred", "oldest wait", "decision", title="jobqueue status", box=box.SIMPLE)
    table.columns[0].no_wrap = True
    for r in rows:
        table.add_row(*_cells(r))
    table.caption = CAPTION
    if not rows:
        table.caption = "no manager has published groups for this environment yet (is `jobqueue up` running?)"
    view: RenderableType = table if not rows or fits(console, table) else _group_cards(rows)
    details = [_manager_line(rows[0])] if rows else []
    details += [f"[bold]{r['group']}[/]: {r['detail']} ({r['age_seconds']}s ago)" for r in rows
               if r["detail"] and not r["error"]]
    details += [f"[bold red]{r['group']}[/]: {r['error']}" for r in rows if r["error"]]
    details += [f"[bold red]{r['group']}[/]: {escape(r['start_trouble'])}" for r in rows if r.get("start_trouble")]
    details += [f"[bold]{r['group']}[/]: removed from the config; draining" for r in rows if not r["configured"]]
    return Group(view, *details)


def _cells(r: dict[str, Any]) -> list[str]:
    oldest = _age(r["oldest_wait_seconds"]) if r.get("oldest_wait_seconds") is not None else None
    cells = [r["group"], r["min"], r["max"], r["desired"], r["current"], r["consumers_ready"], r["busy"],
             r["ready"], r.get("held"), r["in_flight"], r["deferred"], oldest, r["decision"]]
    return ["-" if c is None else str(c) for c in cells]


def _group_cards(rows: list[dict[str, Any]]) -> Group:
    """Three lines per group: its name, bounds and decision; its consumers; its jobs."""
    cells = [_cells(r) for r in rows]
    heads = aligned([[c[0], f"min {c[1]}  max {c[2]}", f"decision {c[12]}"] for c in cells])
    consumers = aligned([["  consumers", f"desired {c[3]}", f"current {c[4]}", f"live {c[5]}", f"busy {c[6]}"]
                         for c in cells])
    jobs = aligned([["  jobs     ", f"ready {c[7]}", f"held {c[8]}", f"in flight {c[9]}", f"deferred {c[10]}",
                     f"oldest wait {c[11]}"] for c in cells])
    lines: list[RenderableType] = [Text("jobqueue status", "italic", justify="center")]
    for r, head, consumer, job in zip(rows, heads, consumers, jobs, strict=True):
        line = Text(head)
        line.stylize("bold", 0, len(r["group"]))
        lines += [line, Text(consumer), Text(job)]
    return Group(*lines, Text(CAPTION, "dim"))


def _manager_line(row: dict[str, Any]) -> str:
    age = row.get("manager_tick_age_seconds")
    if not row.get("manager_stale"):
        return f"manager: last tick {_age(age or 0.0)} ago"
    since = f"for {_age(age)}" if age is not None else "yet"
    return (f"[bold red]warning:[/] no manager has ticked {since}, so queued jobs wait; start one "
            "(`jobqueue up`, or `jobqueue manager`)")


async def watch_status(settings: Settings, interval: float, api_url: str | None = None,
                       token: str | None = None) -> None:
    """Redraw the status table every `interval` seconds until interrupted."""
    import asyncio

    from rich.live import Live

    from jobqueue.cli.console import console

    with Live(console=console, refresh_per_second=4) as live:
        while True:
            live.update(render_status(await read_status(settings, api_url, token), console))
            await asyncio.sleep(interval)
