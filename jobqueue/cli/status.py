"""`jobqueue status`: each group's bounds, consumers and queue, with the manager's last decision."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Group
from rich.markup import escape
from rich.table import Table

from jobqueue.group_status import group_rows
from jobqueue.keys import Keys
from jobqueue.redis import connect_redis
from jobqueue.settings import Settings


def _age(seconds: float) -> str:
    return f"{seconds:.1f}s" if seconds < 120 else f"{seconds / 60:.0f} min"


async def read_status(settings: Settings) -> list[dict[str, Any]]:
    redis = connect_redis(settings)
    try:
        return await group_rows(redis, Keys.for_environment(settings.environment), settings)
    finally:
        await redis.aclose()


def render_status(rows: list[dict[str, Any]]) -> Group:
    table = Table("group", "min", "max", "desired", "current", "live", "busy", "ready", "in flight", "deferred",
                  "oldest wait", "decision", title="jobqueue status", box=box.SIMPLE)
    for r in rows:
        oldest = f"{r['oldest_wait_seconds']}s" if r.get("oldest_wait_seconds") is not None else None
        cells = [r["group"], r["min"], r["max"], r["desired"], r["current"], r["consumers_ready"], r["busy"],
                 r["ready"], r["in_flight"], r["deferred"], oldest, r["decision"]]
        table.add_row(*("-" if c is None else str(c) for c in cells))
    table.caption = ("consumers: desired, current (asked for), live (fresh heartbeat), busy (holding a job); "
                     "jobs: ready (due, not running), in flight, deferred")
    if not rows:
        table.caption = "no manager has published groups for this environment yet (is `jobqueue up` running?)"
    details = [_manager_line(rows[0])] if rows else []
    details += [f"[bold]{r['group']}[/]: {r['detail']} ({r['age_seconds']}s ago)" for r in rows
               if r["detail"] and not r["error"]]
    details += [f"[bold red]{r['group']}[/]: {r['error']}" for r in rows if r["error"]]
    details += [f"[bold red]{r['group']}[/]: {escape(r['start_trouble'])}" for r in rows if r.get("start_trouble")]
    details += [f"[bold]{r['group']}[/]: removed from the config; draining" for r in rows if not r["configured"]]
    return Group(table, *details)


def _manager_line(row: dict[str, Any]) -> str:
    age = row.get("manager_tick_age_seconds")
    if not row.get("manager_stale"):
        return f"manager: last tick {_age(age or 0.0)} ago"
    since = f"for {_age(age)}" if age is not None else "yet"
    return (f"[bold red]warning:[/] no manager has ticked {since}, so queued jobs wait; start one "
            "(`jobqueue up`, or `jobqueue manager`)")


async def watch_status(settings: Settings, interval: float) -> None:
    """Redraw the status table every `interval` seconds until interrupted."""
    import asyncio

    from rich.live import Live

    from jobqueue.cli.console import console

    with Live(console=console, refresh_per_second=4) as live:
        while True:
            live.update(render_status(await read_status(settings)))
            await asyncio.sleep(interval)
