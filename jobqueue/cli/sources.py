"""`jobqueue sources`: lay out a Parquet source in key buckets, so that each shard of a sharded query reads only its
share of it (`jobqueue.engine.buckets`)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Annotated

import typer

from jobqueue.cli.console import console, fail_cleanly, settings_or_exit
from jobqueue.engine.buckets import MAX_BUCKETS, BucketingError, write_bucketed
from jobqueue.preflight import PreflightError
from jobqueue.progress import show_by_default
from jobqueue.storage import Storage


@contextlib.contextmanager
def _rows_bar(label: str) -> Iterator[Callable[[int, int], None] | None]:
    """A bar of rows written, transient, where `wait()` draws its bar (`show_by_default`); None (no bar) when stderr
    is a file or a pipe."""
    if not show_by_default():
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  transient=True) as bar:
        task = bar.add_task(label, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


app = typer.Typer(help="Feature sources: lay one out for sharded queries.", no_args_is_help=True)


@app.command("bucket")
def bucket(
    source: Annotated[str, typer.Argument(help="The Parquet source: a file, directory or glob, local or s3://.")],
    dest: Annotated[str, typer.Argument(help="Where the bucketed copy goes (local or s3://): new or empty.")],
    key: Annotated[str, typer.Option("--key", help="The source's key column (the registry source's `key`).")],
    buckets: Annotated[int, typer.Option("--buckets", help=f"How many buckets, 2 to {MAX_BUCKETS}: a multiple of "
                                         "the num_shards your queries use; each shard reads buckets/num_shards of "
                                         "them.")] = 64,
) -> None:
    """Write SOURCE again under DEST in key buckets, by the hash that splits sharded queries, with a manifest
    written last. Point the registry source's `path` at DEST: unsharded queries read every bucket, and a shard of
    a query sharded by this key reads only the buckets holding its keys, when its num_shards divides the buckets.
    Object-store credentials are the JOBQUEUE_S3_* settings, as the consumers'."""
    settings = settings_or_exit()
    started = time.perf_counter()
    with fail_cleanly(), _rows_bar("rows bucketed") as progress:
        try:
            layout = write_bucketed(Storage(settings), source, dest, key, buckets, progress)
        except (BucketingError, FileNotFoundError) as e:
            raise PreflightError(str(e)) from None
    console.print(f"{dest}: {layout.rows:,} rows in {layout.buckets} buckets by {key!r} "
                  f"({time.perf_counter() - started:.1f} s)", highlight=False, soft_wrap=True)
