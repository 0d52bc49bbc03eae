"""`jobqueue` command line. Commands are thin: they parse options and call the SDK, manager or consumer."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from pathlib import Path
from typing import Annotated

import typer

from jobqueue.cli.console import ApiUrl, Token, console, fail_cleanly, settings_or_exit
from jobqueue.cli.gc import gc
from jobqueue.cli.jobs import app as jobs_app
from jobqueue.cli.jobs import cancel as cancel_job
from jobqueue.cli.registry import app as registry_app
from jobqueue.cli.schedules import app as schedules_app
from jobqueue.cli.sources import app as sources_app
from jobqueue.cli.tokens import app as tokens_app
from jobqueue.logs import configure_logging, get_logger
from jobqueue.preflight import check_config_files, check_port_free, check_redis, single_instance
from jobqueue.profiler.targets import announce_role

app = typer.Typer(
    name="jobqueue", help="Async job queue for offline feature queries.", no_args_is_help=True,
    pretty_exceptions_enable=False, add_completion=False,
)

app.add_typer(schedules_app, name="schedules")
app.add_typer(jobs_app, name="jobs")
app.add_typer(tokens_app, name="tokens")
app.add_typer(registry_app, name="registry")
app.add_typer(sources_app, name="sources")
app.command("cancel")(cancel_job)
app.command("gc")(gc)

GroupOption = Annotated[str, typer.Option("--resource-group", "-g", help="Resource group to serve.")]


@app.command()
def up(
    embedded: Annotated[
        bool | None,
        typer.Option("--embedded/--no-embedded", help="Start an embedded Valkey (default: no JOBQUEUE_REDIS_URL)."),
    ] = None,
) -> None:
    """Run the manager with the local backend, plus an embedded Redis when none is configured."""
    from jobqueue.api.local_token import local_admin_token
    from jobqueue.api.server import api_in_thread, recorded_api_url
    from jobqueue.embedded import embedded_redis
    from manager.runner import run_manager

    settings = settings_or_exit()
    configure_logging(settings.log_format, settings.log_level)
    announce_role("manager")
    use_embedded = settings.redis_url is None if embedded is None else embedded
    with fail_cleanly(), contextlib.ExitStack() as stack:
        stack.enter_context(single_instance(settings.home))  # before anything starts or writes under the home
        check_port_free(settings.http_host, settings.manager_http_port, "JOBQUEUE_MANAGER_HTTP_PORT")
        check_config_files(settings)
        if use_embedded:
            url = stack.enter_context(embedded_redis(settings.home))
            settings = settings.model_copy(update={"redis_url": url})
        settings.resolved_redis_url()  # no Redis at all: NoServerError now, before the API starts
        api_url = stack.enter_context(api_in_thread(settings, fallback_to_free=True))
        token_file = stack.enter_context(local_admin_token(settings))  # before clients can find the URL
        stack.enter_context(recorded_api_url(settings.api_url_file, api_url))
        console.print(f"API: {api_url} (OpenAPI: {api_url}/openapi.json; recorded in {settings.api_url_file}; "
                      f"your local admin token: {token_file})", highlight=False)
        asyncio.run(run_manager(settings))


@app.command()
def api() -> None:
    """Run the HTTP API (JOBQUEUE_API_HOST:JOBQUEUE_API_PORT) until SIGTERM; stateless, so run as many as needed."""
    from jobqueue.api.server import serve

    settings = settings_or_exit()
    configure_logging(settings.log_format, settings.log_level)
    with fail_cleanly():
        asyncio.run(check_redis(settings))
        serve(settings)


@app.command()
def manager() -> None:
    """Run the manager: watch every group's queue and scale its consumers."""
    from manager.runner import run_manager

    settings = settings_or_exit()
    configure_logging(settings.log_format, settings.log_level)
    announce_role("manager")
    with fail_cleanly():
        check_port_free(settings.http_host, settings.manager_http_port, "JOBQUEUE_MANAGER_HTTP_PORT")
        check_config_files(settings)
        asyncio.run(check_redis(settings))
        asyncio.run(run_manager(settings))


@app.command()
def consumer(
    resource_group: GroupOption = "default",
    max_jobs: Annotated[int, typer.Option(min=1, help="Queries run at once (the group's jobs_per_consumer).")] = 1,
) -> None:
    """Run a consumer (arq worker) for one resource group until SIGTERM, then drain."""
    from consumer.worker import run_consumer

    run_consumer(resource_group, max_jobs)


@app.command()
def profiler(
    once: Annotated[bool, typer.Option("--once", help="One capture and upload, then exit.")] = False,
    duration: Annotated[int | None, typer.Option(
        "--duration", min=1, help="Seconds per capture (default: JOBQUEUE_PROFILER_DUMP_DURATION_SECONDS, 60).",
    )] = None,
) -> None:
    """Sample every jobqueue process on this machine (managers and consumers, any environment) with perf
    (or py-spy), for --duration seconds per capture, and upload the dumps (DaemonSet)."""
    from jobqueue.profiler.collectors import choose_collector
    from jobqueue.profiler.daemon import ObjectStoreUploader, ProfilerDaemon

    settings = settings_or_exit()
    if duration is not None:
        settings = settings.model_copy(update={"profiler_dump_duration_seconds": duration})
    configure_logging(settings.log_format, settings.log_level)
    with fail_cleanly():  # no usable collector: exit 2 saying why
        collector, why = asyncio.run(choose_collector(settings.profiler_collector))
    get_logger("jobqueue.profiler").info("profiler collector chosen", collector=collector.name, reason=why)
    export_to = settings.profiler_export_to
    daemon = ProfilerDaemon(settings, collector, ObjectStoreUploader(settings, export_to) if export_to else None)

    async def main() -> None:
        if once:
            settings.profiler_root.mkdir(parents=True, exist_ok=True)
            outcome = await daemon.cycle()
            if outcome != "captured":  # the log line above says why; a one-shot run that captured nothing fails
                raise SystemExit(f"profiler --once: nothing captured ({outcome}); see the log line above")
            return
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await daemon.run(stop)

    with fail_cleanly():
        asyncio.run(main())


@app.command("settings")
def show_settings(
    markdown: Annotated[bool, typer.Option("--markdown", help="Print the Markdown table of docs/settings.md.")] = False,
) -> None:
    """List every setting: variable, default, meaning."""
    from jobqueue.settings import settings_reference

    rows = settings_reference()
    if markdown:
        typer.echo(settings_markdown(rows))
        return
    from rich.table import Table

    table = Table("variable", "default", "meaning", show_lines=False)
    for row in rows:
        table.add_row(*row)
    console.print(table)


def settings_markdown(rows: list[tuple[str, str, str]]) -> str:
    lines = [
        "# Settings",
        "",
        "Generated by `jobqueue settings --markdown` (`make docs`) from `jobqueue/settings.py`; a test keeps it",
        "in sync. Every setting is an environment variable, or a line in the dotenv file named by",
        "`JOBQUEUE_ENV_FILE` (default `.env`). Unknown `JOBQUEUE_*` variables are an error.",
        "Sizes accept units: `512MiB`, `2GB`, `1Gi`.",
        "",
        "| variable | default | meaning |",
        "| --- | --- | --- |",
    ]
    lines += ["| `{}` | `{}` | {} |".format(v, d, m.replace("|", "\\|")) for v, d, m in rows]
    return "\n".join(lines)


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Refresh live until Ctrl-C.")] = False,
    interval: Annotated[float, typer.Option(min=0.2, help="Seconds between refreshes with --watch.")] = 1.0,
    api_url: ApiUrl = None,
    token: Token = None,
) -> None:
    """Per-group consumers and queue depth, with the manager's last scaling decision."""
    from jobqueue.cli.status import read_status, render_status, watch_status

    settings = settings_or_exit()
    with fail_cleanly():
        if watch:
            asyncio.run(watch_status(settings, interval, api_url, token))
            return
        rows = asyncio.run(read_status(settings, api_url, token))
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    else:
        console.print(render_status(rows, console))


@app.command()
def demo(
    users: Annotated[int, typer.Option(help="Users in the generated offline store.")] = 100_000,
    rows: Annotated[int, typer.Option(help="Input rows per query of the default group.")] = 200_000,
    home: Annotated[Path | None, typer.Option(help="Directory for the demo's data and state.")] = None,
) -> None:
    """Generate a sample store, start the embedded stack, run queries on two groups, show scaling."""
    from jobqueue.cli.demo import run_demo

    settings = settings_or_exit()
    with fail_cleanly():
        ok = asyncio.run(run_demo(settings, users=users, rows=rows, home=home))
    raise typer.Exit(0 if ok else 1)


if __name__ == "__main__":
    app()
