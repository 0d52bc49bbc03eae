"""`jobqueue jobs`: recent jobs (by group and state), one job's full record, its consumer log lines, cancel."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from jobqueue.attribution import parse_tag_filters
from jobqueue.cli.console import ApiUrl, Token, console, fail_cleanly, settings_or_exit, with_client
from jobqueue.cli.job_views import job_card, jobs_view
from jobqueue.errors import JobNotFoundError
from jobqueue.job_filter import JobFilter
from jobqueue.job_logs import job_log_entries, log_dir, log_line
from jobqueue.logs import wrap_ansi
from jobqueue.models import JobRecord, JobStatus

if TYPE_CHECKING:
    from jobqueue.client import AsyncJobQueueClient

app = typer.Typer(help="Recent jobs, one job's record, its consumer log lines, cancel.", no_args_is_help=False)
IdArg = Annotated[str, typer.Argument(help="Job id, or a unique prefix of it (the progress bar shows 8 characters).")]


@app.callback(invoke_without_command=True)
def list_jobs(
    ctx: typer.Context,
    group: Annotated[str | None, typer.Option("--group", "-g", help="Only this resource group.")] = None,
    state: Annotated[JobStatus | None, typer.Option("--state", "-s", help="Only this state.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="How many, newest first.")] = 20,
    owner: Annotated[str | None, typer.Option(help="Only jobs of this owner.")] = None,
    team: Annotated[str | None, typer.Option(help="Only jobs of this team.")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="Only jobs with this tag, NAME=VALUE (repeatable).")] = None,
    query_name: Annotated[str | None, typer.Option(help="Only jobs with this query name.")] = None,
    parent: Annotated[str | None, typer.Option(help="Only the shards of this sharded query (its job id).")] = None,
    shards: Annotated[bool, typer.Option("--shards", help="List the shards of sharded queries too.")] = False,
    api_url: ApiUrl = None,
    token: Token = None,
) -> None:
    """Recent jobs with their wait and run times and spilled bytes (over the API: those the token may see). A sharded
    query is one line, its parent job: its shards with --parent ID, or every job's with --shards."""
    if ctx.invoked_subcommand is not None:
        return
    with fail_cleanly():
        wanted = JobFilter(group=group, state=state, owner=owner, team=team, query_name=query_name,
                           tags=parse_tag_filters(tag or []), parent=parent, shards=shards)

    async def fetch(client: AsyncJobQueueClient) -> list[JobRecord]:
        return await client.jobs(owner=wanted.owner, team=wanted.team, state=wanted.state,
                                 resource_group=wanted.group, tags=wanted.tags, query_name=wanted.query_name,
                                 limit=limit, parent=wanted.parent, include_shards=wanted.shards)

    console.print(jobs_view(console, with_client(fetch, api_url, token)))


@app.command("show")
def show(
    job_id: IdArg,
    as_json: Annotated[bool, typer.Option("--json", help="The record as JSON, as the API returns it.")] = False,
    api_url: ApiUrl = None,
    token: Token = None,
) -> None:
    """The full record of one job: status, timings, errors of every attempt, performance summary."""
    record = with_client(lambda client: client.get_job(job_id), api_url, token)
    if as_json:
        console.print_json(record.model_dump_json())
    else:
        console.print(job_card(record, console.width))


@app.command("cancel")
def cancel(job_id: IdArg, wait: Annotated[float, typer.Option(help="Seconds to wait for a running job.")] = 30,
           api_url: ApiUrl = None, token: Token = None) -> None:
    """Cancel a job: a queued one at once, a running one interrupted by its consumer."""
    record = with_client(lambda client: client.cancel(job_id, wait), api_url, token)
    console.print(f"job {record.job_id} is {record.status.value}")


@app.command("logs")
def logs(job_id: IdArg) -> None:
    """The consumer log lines of one job, oldest first, from the local consumers' logs (JOBQUEUE_HOME/logs)."""

    async def full_id(client: AsyncJobQueueClient) -> str:
        try:
            return await client.resolve_job_id(job_id)
        except JobNotFoundError:  # the record expired before the log files: the full id still finds its lines
            return job_id

    job = with_client(full_id)
    directory = log_dir(settings_or_exit().home)
    lines = job_log_entries(directory, job)
    if not lines:
        console.print(f"no log lines of job {job} in {directory}/*.log (consumers on Kubernetes log to their pods: "
                      f"`kubectl logs` and search for job_id={job})", highlight=False)
        return
    for e in lines:
        line = log_line(e)
        if console.is_terminal:  # broken at spaces, never inside an id; one line per entry when piped
            line = wrap_ansi(line, console.width)
        console.print(line, highlight=False, markup=False, soft_wrap=True)

