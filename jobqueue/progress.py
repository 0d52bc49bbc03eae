"""The progress bar of `wait(show_progress=True)`: rich in a terminal, tqdm in a notebook.

rich draws into a Jupyter kernel only through ipywidgets, which is not a dependency: without it, it drew
nothing at all. In a kernel the bar is `tqdm.auto`'s instead: a widget where ipywidgets is installed, else a
text bar on the cell's stderr, which Jupyter, JupyterLab and VS Code redraw in place. Either bar is closed
when the wait ends in any way (a result, an error, a timeout, Ctrl-C cancelling the poller).
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from jobqueue.models import JobRecord


@dataclass(frozen=True)
class ProgressBar:
    update: Callable[[JobRecord], None]  # move the bar to a record's progress and status
    tell: Callable[[str], None]  # print a line above the bar


def status_text(record: JobRecord) -> str:
    """What follows the bar: the status, and for a sharded query the shards and rows done
    (`running · shards 3/16 · rows 1,200,000/6,400,000`)."""
    if not record.shard_ids:
        return record.status.value
    return (f"{record.status.value} · shards {record.shards_done or 0}/{len(record.shard_ids)} · "
            f"rows {record.rows_done or 0:,}/{record.input_rows:,}")


def in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (notebook, JupyterLab, VS Code, Colab): where rich would draw its
    bar as an ipywidget, and so draw nothing without ipywidgets."""
    from rich.console import Console

    return Console().is_jupyter


def show_by_default() -> bool:
    """`show_progress=None`: a bar in a terminal and in a notebook, none when stderr is a file or a pipe."""
    return sys.stderr.isatty() or in_notebook()


@contextlib.contextmanager
def progress_bar(job_id: str) -> Iterator[ProgressBar]:
    """A bar labelled `job <first 8 characters of the id>`, closed when the block ends."""
    bar = _notebook_bar if in_notebook() else _terminal_bar
    with bar(f"job {job_id[:8]}") as progress:
        yield progress


@contextlib.contextmanager
def _terminal_bar(label: str) -> Iterator[ProgressBar]:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[status]}"), TimeElapsedColumn(), transient=False,
    ) as progress:
        task = progress.add_task(label, total=1.0, status="queued")

        def update(record: JobRecord) -> None:
            progress.update(task, completed=record.progress, status=status_text(record))

        def tell(line: str) -> None:
            progress.console.print(line, markup=False, highlight=False)

        yield ProgressBar(update, tell)


@contextlib.contextmanager
def _notebook_bar(label: str) -> Iterator[ProgressBar]:
    from tqdm.std import TqdmWarning

    with warnings.catch_warnings():  # "IProgress not found": without ipywidgets the text bar is the intended one
        warnings.simplefilter("ignore", TqdmWarning)
        from tqdm.auto import tqdm

    class JobBar(tqdm):  # type: ignore[type-arg]
        """tqdm's bar with the job's status after it (its own postfix would come with a ", " before it)."""

        status = "queued"

        @property
        def format_dict(self) -> dict[str, Any]:
            return {**super().format_dict, "status": self.status}

    bar = JobBar(total=1.0, desc=label, bar_format="{desc}: {percentage:3.0f}%|{bar}| {status} [{elapsed}]")
    try:
        def update(record: JobRecord) -> None:
            bar.n, bar.status = record.progress, status_text(record)
            bar.refresh()

        yield ProgressBar(update, bar.write)
    finally:
        bar.close()
