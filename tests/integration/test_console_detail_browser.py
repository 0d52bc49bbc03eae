"""A job's page in a real browser (Playwright driving Debian's chromium; nothing downloads a browser), against the API
process and a real consumer on the shared Redis: the page follows a spilling job from queued to running to succeeded
without a reload and without polling (its only request after loading is the one server-sent event stream), then
shows `spilled_bytes` equal to the SDK's summary and 50 result rows; the id copies with one click; and another
owner's job can neither be opened nor streamed."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Request, expect

from jobqueue import AsyncJobQueueClient
from jobqueue.api.server import api_in_thread
from jobqueue.auth.identity import Role
from jobqueue.models import ResourceRequests
from jobqueue.sample import sample_input
from tests.api_support import make_token
from tests.console_pages import chromium as launch_chromium
from tests.console_support import queued_jobs
from tests.helpers import with_groups, worker_running
from tests.integration.test_console_browser import NO_SIDEWAYS_SCROLL, OUTPUT

SCREENSHOTS = os.environ.get("CONSOLE_TEST_SCREENSHOTS")  # a folder: save the job page there (390 and 1280 px)


@pytest.fixture
async def chromium() -> AsyncIterator[Browser]:
    async with launch_chromium() as launched:
        yield launched


async def test_a_jobs_page_goes_queued_running_succeeded_over_sse_without_polling(settings, big_store, tmp_path,
                                                                                   chromium):
    settings = with_groups(settings, tmp_path, {"tight": {"max_instances": 1}}, registry_path=big_store.registry_path,
                           container_memory_bytes=320 * 2**20, query_memory_limit_percent=30)
    ids, times = sample_input(big_store.users, 300_000, seed=9)
    async with AsyncJobQueueClient(settings) as client:
        job = await client.offline_query(ids, OUTPUT, times, owner="alice", team="risk", query_name="churn.big",
                                         resources=ResourceRequests(resource_group="tight"))
    (bobs,) = await queued_jobs(settings, "bob")
    token = await make_token(settings, "alice", Role.USER, "risk")
    with api_in_thread(settings, port=0) as url:
        context = await chromium.new_context(viewport={"width": 1280, "height": 900})
        await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=url)
        page = await context.new_page()
        await page.goto(f"{url}/signin?next=%2Fjobs%2F{job.id}")
        await page.get_by_label("Token").fill(token)
        await page.get_by_role("button", name="Sign in").click()
        await expect(page).to_have_url(f"{url}/jobs/{job.id}")
        state = page.get_by_test_id("state")
        await expect(state).to_have_text("queued")
        await expect(page.locator("#live")).to_have_attribute("data-updates", "1")  # the stream's first card
        requests: list[str] = []

        def seen(request: Request) -> None:
            requests.append(request.url)

        page.on("request", seen)
        await page.evaluate("window.notReloaded = true")

        async with worker_running(settings, "tight"):
            await expect(state).to_have_text("running", timeout=120_000)
            await expect(page.get_by_test_id("attempt-outcome")).to_have_text("running")
            await expect(state).to_have_text("succeeded", timeout=180_000)
        await expect(page.locator("#live")).to_have_attribute("data-ended", "final")
        assert await page.evaluate("window.notReloaded === true"), "the page reloaded"
        assert requests == [], f"the page polled after it loaded: {requests}"  # the stream it opened carried all

        spilled = int(await page.get_by_test_id("spilled_bytes").inner_text())
        async with AsyncJobQueueClient(settings) as client:
            summary = (await client.get_job(job.id)).summary
        assert summary is not None and spilled == summary.spilled_bytes > 0
        await expect(page.get_by_test_id("spill_enabled")).to_have_text("true")
        await expect(page.get_by_test_id("preview").locator("tbody tr")).to_have_count(50)
        await expect(page.get_by_test_id("download")).to_have_attribute("href", f"/jobs/{job.id}/result")

        await page.get_by_role("button", name="Copy id").click()  # one click
        await expect(page.get_by_test_id("copied")).to_have_text("Copied")
        assert await page.evaluate("navigator.clipboard.readText()") == job.id

        for width in (390, 1280):  # the preview table scrolls inside its box, the page never sideways
            await page.set_viewport_size({"width": width, "height": 900})
            assert await page.evaluate(NO_SIDEWAYS_SCROLL), f"the job page scrolls sideways at {width} px"
            if SCREENSHOTS:
                await page.screenshot(path=str(Path(SCREENSHOTS) / f"job-{width}.png"), full_page=True)

        response = await page.goto(f"{url}/jobs/{bobs}")
        assert response is not None and response.status == 404
        await expect(page.get_by_role("heading", name="Cannot show this page")).to_be_visible()
        stream = await page.request.get(f"{url}/live/jobs/{bobs}")
        assert stream.status == 404
        await context.close()
