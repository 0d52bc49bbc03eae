"""`jobqueue schedules`: list scheduled queries, their runs; run now, pause, resume.

A thin layer over the SDK (`schedules()`, `schedule_runs()`, ...): over the API with a token, or direct.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from jobqueue.cli.console import ApiUrl, Token, console, err_console, with_client
from jobqueue.errors import JobNotFoundError
from jobqueue.sizes import format_bytes

if TYPE_CHECKING:
    from jobqueue.api.wire import ScheduleRuns
    from jobqueue.client import AsyncJobQueueClient

MAX_SCHEDULE_RUNS = 1000  # `jobqueue.api.wire.MAX_SCHEDULE_RUNS` (not imported: this command loads light)

app = typer.Typer(help="Scheduled queries: list, runs, run now, pause, resume.", no_args_is_help=False)
NameArg = Annotated[str, typer.Argument(help="Schedule name.")]


@app.callback(invoke_without_command=True)
def list_schedules(ctx: typer.Context, api_url: ApiUrl = None, token: Token = None) -> None:
    """Name, cron, group, state, next run and last run of every schedule."""
    if ctx.invoked_subcommand is not None:
        return

    async def rows(client: AsyncJobQueueClient) -> tuple[list[list[str]], list[str]]:
        listed = await client.schedules()
        out = []
        for sq in listed.schedules:
            last = None
            if sq.last_job:
                with contextlib.suppress(JobNotFoundError):  # expired, or (over the API) not the token's to see
                    last = await client.get_job(sq.last_job)
            out.append([
                sq.name, f"{sq.schedule} ({sq.timezone})", sq.resource_group,
                "paused" if sq.paused else "enabled" if sq.enabled else "disabled",
                sq.next_due.isoformat(timespec="minutes") if sq.next_due else "-",
                f"{last.status.value} ({(sq.last_due or '')[:16]})" if last else "-",
                sq.last_reason or "-",
            ])
        return out, listed.errors

    table_rows, errors = with_client(rows, api_url, token)
    if not table_rows and not errors:
        console.print(
            "no schedules: add one to a YAML file named by JOBQUEUE_SCHEDULES_PATH (`schedules: [{name, schedule, "
            "output, resource_group, input}]`, see docs/schedules.md) and restart the manager (`jobqueue up`), "
            "which publishes them", highlight=False,
        )
        return
    table = Table("name", "cron", "group", "state", "next run", "last run", "last decision", title="schedules")
    for row in table_rows:
        table.add_row(*row)
    console.print(table)
    for error in errors:
        err_console.print(f"[red]not loaded:[/] {error}", highlight=False)


@app.command("runs")
def list_runs(name: NameArg, limit: Annotated[int, typer.Option(min=1, max=MAX_SCHEDULE_RUNS, help="How many, newest "
                                                                "first.")] = 10,
              api_url: ApiUrl = None, token: Token = None) -> None:
    """The last runs of a schedule: status, duration, spilled bytes."""

    async def runs(client: AsyncJobQueueClient) -> ScheduleRuns:
        return await client.schedule_runs(name, limit)

    table = Table("job", "status", "duration", "spilled", title=f"runs of {name}")
    for run in with_client(runs, api_url, token).runs:
        table.add_row(run.job_id, run.status.value if run.status else "expired record",
                      f"{run.duration_seconds:.1f}s" if run.duration_seconds is not None else "-",
                      format_bytes(run.spilled_bytes) if run.spilled_bytes is not None else "-")
    console.print(table)


def _act(name: str, action: str, done: str, api_url: str | None, token: str | None) -> None:
    async def act(client: AsyncJobQueueClient) -> Any:
        return await {"run": client.run_schedule, "pause": client.pause_schedule,
                      "resume": client.resume_schedule}[action](name)

    with_client(act, api_url, token)
    console.print(done)


@app.command("run")
def run_now(name: NameArg, api_url: ApiUrl = None, token: Token = None) -> None:
    """Trigger a run now (the manager submits it on its next tick)."""
    _act(name, "run", f"requested a run of {name}", api_url, token)


@app.command("pause")
def pause(name: NameArg, api_url: ApiUrl = None, token: Token = None) -> None:
    """Stop firing until resumed; due times while paused are not caught up."""
    _act(name, "pause", f"paused {name}", api_url, token)


@app.command("resume")
def resume(name: NameArg, api_url: ApiUrl = None, token: Token = None) -> None:
    """Fire again from the next due time."""
    _act(name, "resume", f"resumed {name}", api_url, token)
