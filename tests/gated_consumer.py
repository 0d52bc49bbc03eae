"""A consumer process whose queries wait at a gate: `python -m tests.gated_consumer <group> <gate dir>` (settings
from the JOBQUEUE_* environment). Each query waits until `<gate dir>/<job id>` or `<gate dir>/all` exists, then
runs for real; tests use it to hold shards running while they kill a consumer or cancel a query, with no timing."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from pathlib import Path
from typing import Any

from consumer.worker import build_worker
from jobqueue.engine.duckdb_run import QueryInterrupted
from jobqueue.engine.execute import PreparedQuery
from jobqueue.models import QueryJob
from jobqueue.settings import load_settings


class GatedQuery:
    """A real `PreparedQuery` that starts only once its gate opens (or stops when interrupted first)."""

    def __init__(self, gate: Path, job: QueryJob, *args: Any, **kwargs: Any) -> None:
        self.gates = (gate / job.job_id, gate / "all")
        self.query = PreparedQuery(job, *args, **kwargs)
        self.stopped = threading.Event()

    def progress(self) -> float:
        return self.query.progress()

    def interrupt(self) -> None:
        self.stopped.set()
        self.query.interrupt()

    def execute(self) -> Any:
        while not any(g.exists() for g in self.gates):
            if self.stopped.wait(0.05):
                raise QueryInterrupted("interrupted at the gate")
        return self.query.execute()


async def main(group: str, gate: Path) -> None:
    worker = build_worker(load_settings(), group, max_jobs=1,
                          prepare=lambda job, *a, **k: GatedQuery(gate, job, *a, **k))
    await worker.async_run()


if __name__ == "__main__":
    started = time.time()
    asyncio.run(main(sys.argv[1], Path(sys.argv[2])))
