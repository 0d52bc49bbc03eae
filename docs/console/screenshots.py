"""The README's console screenshots (`make screenshots`): a real `jobqueue up` with a few jobs, one of which spills,
signed in with `up`'s token in Debian's chromium; each page of tests/console_pages.py (PAGES) at 1280 px and 390 px
is saved as docs/console/<page>-<width>.png (its first 2000 px), in 96 colours (Pillow; a page of text looks the
same at a third of the size).

    PYTHONPATH=. .venv/bin/python docs/console/screenshots.py [--out docs/console]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from PIL import Image

from jobqueue import AsyncJobQueueClient, JobStatus, ResourceRequests
from jobqueue.handles import AsyncJobHandle
from jobqueue.sample import sample_input, write_sample_store
from jobqueue.settings import Settings
from tests.console_pages import chromium, each_page
from tests.up_stack import jobqueue_up

HERE = Path(__file__).parent
GROUPS = {
    "default": {"max_instances": 2, "jobs_per_consumer": 1, "memory": "2GiB"},
    # the demo's group: a 320 MiB container with a 30 % query limit, so a 300 000-row join spills
    "tight": {"max_instances": 1, "jobs_per_consumer": 1, "memory": "320MiB", "memory_limit_percent": 30},
    "later": {"max_instances": 0},  # no consumer: its job waits, and says why
}
OUTPUT = ["user.f0", "user.f1", "user.logins", "user.segment"]
USERS = 100_000
COLOURS = 96
MAX_HEIGHT = 2000  # px: the top of a long page (a job's 50 result rows) shows what it is


async def submit(client: AsyncJobQueueClient) -> dict[str, str]:
    """The jobs the pages show; returns the ids PAGES' paths name, once every job that can finish has."""
    async def query(rows: int, group: str, name: str, seed: int, **tags: str) -> AsyncJobHandle:
        ids, times = sample_input(USERS, rows, seed=seed)
        job = await client.offline_query(ids, OUTPUT, times, query_name=name, tags=tags,
                                         resources=ResourceRequests(resource_group=group))
        assert isinstance(job, AsyncJobHandle)
        return job

    small = [await query(2_000, "default", f"churn.{name}", seed, purpose="docs")
             for seed, name in enumerate(("daily", "weekly"), start=1)]
    spilling = await query(300_000, "tight", "churn.backfill", 11, purpose="docs", spill="expected")
    cancelled = await query(10, "later", "churn.adhoc", 5)
    await cancelled.cancel()
    waiting = await query(10, "later", "churn.hourly", 6)
    for job in (*small, spilling):
        await job.wait(timeout=600)
    summary = (await spilling.record()).summary
    assert (await spilling.record()).status is JobStatus.SUCCEEDED and summary and summary.spilled_bytes > 0, \
        f"the spilling job did not spill: {summary}"
    return {"succeeded": spilling.id, "queued": waiting.id}


def compress(path: Path) -> None:
    """Chromium's PNG as a 96-colour palette PNG (no dithering: flat colours and text stay crisp)."""
    with Image.open(path) as shot:
        small = shot.convert("RGB").quantize(colors=COLOURS, method=Image.Quantize.MAXCOVERAGE,
                                             dither=Image.Dither.NONE)
    small.save(path, optimize=True)


async def main(out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="jobqueue-screenshots-") as tmp:
        store = await asyncio.to_thread(write_sample_store, Path(tmp) / "store", USERS, 10, 4)
        with jobqueue_up(Path(tmp) / "home", store.registry_path, GROUPS) as up:
            async with AsyncJobQueueClient(Settings(home=Path(tmp) / "client"), api_url=up.url,
                                           token=up.token) as client:
                ids = await submit(client)
            async with chromium() as browser:
                async for page, console_page, where in each_page(browser, up.url, up.token, ids):
                    width = page.viewport_size["width"] if page.viewport_size else 0
                    path = out / f"{console_page.name}-{width}.png"
                    height = min(await page.evaluate("document.scrollingElement.scrollHeight"), MAX_HEIGHT)
                    await page.screenshot(path=path, full_page=True, animations="disabled", caret="hide",
                                          clip={"x": 0, "y": 0, "width": width, "height": height})
                    compress(path)
                    print(f"{path}: {where}, {path.stat().st_size // 1024} KiB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="where the PNGs go (default: docs/console)")
    asyncio.run(main(parser.parse_args().out))
