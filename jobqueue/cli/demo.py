"""`jobqueue demo` (`make demo`): the whole product on one machine, as a new user first meets it.

It generates a sample offline store, starts the embedded Valkey (unless JOBQUEUE_REDIS_URL is
set) and the manager with the local-process backend, submits async point-in-time queries to two
resource groups through the SDK, shows them running, prints each performance summary, and shows
each group's consumers scaling 0 -> N -> 0. The `tight` group's small memory limit forces a spill.
Returns False (exit 1) if any of that did not happen.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping, Sized
from pathlib import Path
from typing import Protocol

import yaml
from rich.console import Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table

from jobqueue.cli.console import console
from jobqueue.cli.job_views import STATUS_STYLE
from jobqueue.cli.layout import fits
from jobqueue.client import AsyncJobQueueClient
from jobqueue.embedded import embedded_redis
from jobqueue.handles import AsyncJobHandle
from jobqueue.logs import configure_logging
from jobqueue.models import JobRecord, JobStatus, ResourceRequests
from jobqueue.outage import redacted
from jobqueue.sample import sample_input, write_sample_store
from jobqueue.settings import Settings
from jobqueue.sizes import format_bytes

GROUPS = {
    # on one machine, give each consumer its share of memory, as a container limit would
    "default": {"min_instances": 0, "max_instances": 3, "jobs_per_consumer": 1, "memory": "2GiB"},
    # a 320 MiB container with a 30% query limit (~96 MiB): the joins below need ~190 MiB, so they spill, 75-80
    # MiB each. A query is promised at least JOBQUEUE_SPILL_MIN_BYTES of the disk (default 64 MiB), and the
    # first query on the disk is promised nearly all the rest: each tight query failed its first attempt
    # (spill space exhausted at 64 MiB) and ran again 5 s later. Asking for what they spill, they wait for
    # space instead, a second or two.
    "tight": {"min_instances": 0, "max_instances": 2, "jobs_per_consumer": 1, "memory": "320MiB",
              "memory_limit_percent": 30, "env": {"JOBQUEUE_SPILL_MIN_BYTES": "256MiB"}},
}
OUTPUT = ["user.f0", "user.f1", "user.f2", "user.f3", "user.logins", "user.segment"]


class ConsumerView(Protocol):
    """What the demo reads from the manager's local backend (`LocalBackend`, imported only by `run_demo`)."""

    @property
    def consumers(self) -> Mapping[str, object]: ...

    def active(self, group: str) -> Sized: ...


class Timeline:
    """Consumer counts per group, recorded whenever they change: the 0 -> N -> 0 story."""

    def __init__(self, groups: list[str]) -> None:
        self.counts: dict[str, list[int]] = {g: [0] for g in groups}

    def observe(self, backend: ConsumerView) -> None:
        for group, seen in self.counts.items():
            n = len(backend.active(group))
            if n != seen[-1]:
                seen.append(n)

    def went_up_and_down(self, group: str) -> bool:
        seen = self.counts[group]
        return seen[0] == 0 and max(seen) > 0 and seen[-1] == 0

    def render(self, group: str) -> str:
        return " → ".join(str(n) for n in self.counts[group])


async def run_demo(settings: Settings, users: int, rows: int, home: Path | None) -> bool:
    from manager.backends.local import LocalBackend  # the composition root: the demo starts the manager
    from manager.runner import run_manager

    home = (home or settings.home / "demo").resolve()
    configure_logging("console", "warning")
    console.rule("[bold]jobqueue demo")
    with console.status(f"generating a sample offline store ({users:,} users × 10 snapshots × 2 sources)"):
        store = await asyncio.to_thread(write_sample_store, home / "store", users, 10, 4)
    console.print(f"offline store: [bold]{store.feature_rows:,}[/] rows per source under {store.root}")
    groups_path = home / "resource-groups.yaml"
    groups_path.write_text(yaml.safe_dump({"resource_groups": GROUPS}, sort_keys=False))
    settings = settings.model_copy(update={
        "home": home, "registry_path": store.registry_path, "resource_groups_path": groups_path,
        "manager_tick_seconds": 0.25, "scale_down_stabilization_seconds": 2.0,
        "scale_to_zero_cooldown_seconds": 4.0, "consumer_poll_seconds": 0.1,
        "consumer_heartbeat_seconds": 0.5, "log_format": "json", "manager_http_port": 0,
    })
    async with contextlib.AsyncExitStack() as stack:
        if settings.redis_url is None:
            url = stack.enter_context(embedded_redis(home))
            settings = settings.model_copy(update={"redis_url": url})
            console.print(f"embedded Valkey: {url}")
        else:
            console.print(f"Redis: {redacted(settings.redis_url)}")  # never its credentials
        backend = LocalBackend(settings)
        stop = asyncio.Event()
        manager = asyncio.create_task(run_manager(settings, stop, backend=backend))
        try:
            return await _drive(settings, backend, stack, users, rows)
        finally:
            stop.set()
            await manager


async def _drive(
    settings: Settings, backend: ConsumerView, stack: contextlib.AsyncExitStack, users: int, rows: int
) -> bool:
    client = await stack.enter_async_context(AsyncJobQueueClient(settings))
    timeline = Timeline(list(GROUPS))
    plan = [("default", rows, seed) for seed in range(1, 5)] + [("tight", 300_000, seed) for seed in (11, 12)]
    jobs: list[tuple[str, AsyncJobHandle]] = []
    for group, n, seed in plan:
        ids, times = sample_input(users, n, seed=seed)
        job = await client.offline_query(ids, OUTPUT, times, run_asynchronously=True,
                                         resources=ResourceRequests(resource_group=group))
        assert isinstance(job, AsyncJobHandle)  # run_asynchronously=True
        jobs.append((group, job))
    console.print(f"submitted {len(jobs)} async queries: 4 → [bold]default[/], 2 → [bold]tight[/] (spills)")

    records: dict[str, JobRecord] = {}
    with Live(console=console, refresh_per_second=8) as live:
        while True:
            for _, job in jobs:
                records[job.id] = await job.record()
            timeline.observe(backend)
            live.update(_progress_view(jobs, records, backend))
            if all(r.status.is_final for r in records.values()):
                break
            await asyncio.sleep(0.15)
    if not console.is_terminal:
        console.line()  # rich ends a live display with a new line only in a terminal; piped, the next line joined it
    console.print(_summary_table(jobs, records))

    deadline = time.monotonic() + 60
    with console.status("all done; waiting for idle consumers to scale to zero (cooldown 4s)"):
        while backend.consumers and time.monotonic() < deadline:
            timeline.observe(backend)
            await asyncio.sleep(0.1)
        timeline.observe(backend)
    for group in GROUPS:
        console.print(f"consumers of [bold]{group}[/]: {timeline.render(group)}")

    first = jobs[0][1]
    console.print(f"first rows of job {first.id[:8]} (user.id with its features as of each input time):")
    console.print((await first.to_pandas()).head(5).to_string(index=False))
    return _checks(jobs, records, timeline)


def _progress_view(
    jobs: list[tuple[str, AsyncJobHandle]], records: dict[str, JobRecord], backend: ConsumerView
) -> Group:
    table = Table("job", "group", "rows", "status", "progress", "consumer", box=None)
    for group, job in jobs:
        r = records[job.id]
        style = STATUS_STYLE[r.status.value]
        table.add_row(job.id[:8], group, f"{r.input_rows:,}", f"[{style}]{r.status.value}",
                      ProgressBar(total=1.0, completed=r.progress, width=24), r.consumer_id or "-")
    consumers = "   ".join(
        f"[bold]{g}[/]: {len(backend.active(g))} consumer(s)" for g in GROUPS
    )
    return Group(table, consumers)


def _summary_table(jobs: list[tuple[str, AsyncJobHandle]], records: dict[str, JobRecord]) -> Table:
    """Each job's performance summary: every column when the console is wide enough, else fewer and merged ones
    (peak / limit memory; spilled bytes, or `off`) so that no row wraps in 80 columns."""
    wide = Table("job", "group", "rows out", "wait", "exec", "mem limit", "peak mem", "spill_enabled",
                 "spilled_bytes", title="performance summaries")
    narrow = Table("job", "group", "rows out", "wait", "exec", "peak / limit mem", "spilled",
                   title="performance summaries", box=None, pad_edge=False)
    for table in (wide, narrow):
        for column in table.columns[:2]:
            column.no_wrap = True  # the job id (its first 8 characters, as the progress bar) and group: never cut
    for group, job in jobs:
        r = records[job.id]
        s = r.summary
        if s is None:
            failed = f"[red]{r.status.value}: {r.error}"
            wide.add_row(job.id[:8], group, failed, *["-"] * 6)
            narrow.add_row(job.id[:8], group, failed, *["-"] * 4)
            continue
        spilled = f"[bold]{format_bytes(s.spilled_bytes)}" if s.spilled_bytes else "0"
        times = (f"{s.rows_out:,}", f"{s.queue_wait_seconds:.1f}s", f"{s.execution_seconds:.1f}s")
        wide.add_row(job.id[:8], group, *times, format_bytes(s.memory_limit_bytes),
                     format_bytes(s.peak_memory_bytes), str(s.spill_enabled), spilled)
        narrow.add_row(job.id[:8], group, *times,
                       f"{format_bytes(s.peak_memory_bytes)} / {format_bytes(s.memory_limit_bytes)}",
                       spilled if s.spill_enabled else "off")
    for table in (wide, narrow):
        for column in table.columns[2:]:
            column.justify = "right"
    return wide if fits(console, wide) else narrow


def _checks(jobs: list[tuple[str, AsyncJobHandle]], records: dict[str, JobRecord], timeline: Timeline) -> bool:
    checks = {
        "every query succeeded at its first attempt": all(
            r.status is JobStatus.SUCCEEDED and r.attempts == 1 for r in records.values()),
        "tight group spilled (spilled_bytes > 0)": all(
            (summary := records[j.id].summary) is not None and summary.spilled_bytes > 0
            for g, j in jobs if g == "tight"
        ),
        "default scaled 0 → N → 0": timeline.went_up_and_down("default"),
        "tight scaled 0 → N → 0": timeline.went_up_and_down("tight"),
    }
    for name, ok in checks.items():
        console.print(f"{'[green]✓' if ok else '[red]✗'}[/] {name}")
    return all(checks.values())
