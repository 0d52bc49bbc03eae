"""`jobqueue gc`: one run of the manager's garbage collector by hand, or `--dry-run` to see what would go."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer
from rich.table import Table

from jobqueue.cli.console import console, fail_cleanly, settings_or_exit
from jobqueue.logs import configure_logging


def gc(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what would be removed.")] = False,
    batch: Annotated[int | None, typer.Option(min=1, help="Items of each kind to examine "
                                              "(default JOBQUEUE_GC_BATCH_SIZE).")] = None,
    show: Annotated[int, typer.Option(min=0, help="Ids listed per kind.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Remove expired results, staged inputs no job needs and index entries of expired records (one run)."""
    from jobqueue.redis import connect_redis
    from manager.gc import GarbageCollector

    settings = settings_or_exit()
    configure_logging(settings.log_format, "warning")  # stderr; the report below says what the run did

    async def once() -> dict[str, list[str]]:
        redis = connect_redis(settings)
        try:
            report = await GarbageCollector(redis, settings, batch=batch).run_once(dry_run=dry_run)
        finally:
            await redis.aclose()
        return report.removed

    with fail_cleanly():
        removed = asyncio.run(once())
    if as_json:
        typer.echo(json.dumps({"dry_run": dry_run, "removed": {k: len(v) for k, v in removed.items()},
                               "ids": {k: v[:show] for k, v in removed.items()}}, indent=2))
        return
    table = Table("kind", "would remove" if dry_run else "removed", "ids", title="garbage collection")
    for kind, ids in removed.items():
        more = f" … and {len(ids) - show} more" if len(ids) > show else ""
        table.add_row(kind, str(len(ids)), ", ".join(ids[:show]) + more)
    console.print(table)
