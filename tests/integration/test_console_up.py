"""The console of a real `jobqueue up` (embedded Valkey, manager, consumer processes, API) in a real browser: sign
in with `up`'s token, submit a query through the SDK over HTTP, watch it appear and succeed on the jobs page without
a reload, open it; then every console page (tests/console_pages.py) passes axe and fits 1280 and 390 px."""

from __future__ import annotations

from playwright.async_api import expect

from jobqueue import AsyncJobQueueClient, JobStatus, ResourceRequests
from jobqueue.settings import Settings
from tests.console_pages import axe_problems, chromium, each_page, layout_problems, signed_in_page
from tests.up_stack import jobqueue_up

# `later` never gets a consumer: its job stays queued, with the reason on its page.
GROUPS = {"default": {"max_instances": 2}, "later": {"max_instances": 0}}


async def test_a_query_submitted_through_the_sdk_succeeds_live_on_the_console_of_jobqueue_up(tmp_path, store):
    with jobqueue_up(tmp_path / "home", store.registry_path, GROUPS) as up:
        async with chromium() as browser, AsyncJobQueueClient(
                Settings(home=tmp_path / "client"), api_url=up.url, token=up.token) as client:
            page = await signed_in_page(browser, up.url, up.token, 1280)
            await page.evaluate("window.notReloaded = true")
            job = await client.offline_query({"user.id": [1, 2, 3]}, ["user.f0", "user.f1"],
                                             query_name="console.up", tags={"via": "sdk"})
            row = page.locator(f'tr[data-job="{job.id}"]')
            await expect(row).to_have_count(1, timeout=60_000)  # a new row, from the live refresh
            await expect(row.get_by_test_id("state")).to_have_text("succeeded", timeout=120_000)
            assert await page.evaluate("window.notReloaded === true"), "the page reloaded instead of refreshing live"
            assert (await job.record()).status is JobStatus.SUCCEEDED

            await row.get_by_role("link", name=job.id).click()
            await expect(page).to_have_url(f"{up.url}/jobs/{job.id}")
            await expect(page.get_by_test_id("spill_enabled")).to_have_text("true")
            await expect(page.get_by_test_id("spilled_bytes")).to_have_text("0")  # three rows fit in memory
            await page.context.close()

            waiting = await client.offline_query({"user.id": [4]}, ["user.f0"], query_name="console.up.later",
                                                 resources=ResourceRequests(resource_group="later"))
            problems: list[str] = []
            async for each, _, where in each_page(browser, up.url, up.token, {"succeeded": job.id,
                                                                                 "queued": waiting.id}):
                problems += await axe_problems(each, where) + await layout_problems(each, where)
            assert not problems, "\n".join(problems)
