"""The web console in a real browser: Playwright for Python driving Debian's chromium (`make browser` installs it;
nothing downloads a browser), against the API process and a real consumer on the shared Redis.

A `user` signs in, sees only its own jobs, watches its spilling query go from queued to succeeded without a reload,
reads `spill_enabled` and `spilled_bytes` on the job's card, cancels a queued job through the confirmation (a
forged POST without the CSRF field is refused), and signs out. An operator sees everyone's jobs. At 400 px and
1280 px no page scrolls horizontally."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from jobqueue import AsyncJobQueueClient
from jobqueue.api.server import api_in_thread
from jobqueue.auth.identity import Role
from jobqueue.models import ResourceRequests
from jobqueue.sample import sample_input
from tests.api_support import make_token
from tests.console_support import queued_jobs
from tests.helpers import with_groups, worker_running

CHROMIUM = Path(os.environ.get("JOBQUEUE_TEST_CHROMIUM", "/usr/bin/chromium"))
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run"]
OUTPUT = ["user.f0", "user.f1", "user.logins", "user.segment"]
NO_SIDEWAYS_SCROLL = "document.scrollingElement.scrollWidth <= window.innerWidth"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    assert CHROMIUM.exists(), f"no {CHROMIUM}: `make browser` installs Debian's chromium (apt-get install chromium)"
    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS, headless=True)
        try:
            yield launched
        finally:
            await launched.close()


async def sign_in(page: Page, url: str, token: str) -> None:
    await page.goto(f"{url}/jobs")
    await expect(page).to_have_url(f"{url}/signin?next=%2Fjobs")
    await page.get_by_label("Token").fill(token)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_url(f"{url}/jobs")


async def test_a_user_follows_a_spilling_job_cancels_one_and_signs_out(settings, big_store, tmp_path, browser):
    settings = with_groups(settings, tmp_path, {"tight": {"max_instances": 1}}, registry_path=big_store.registry_path,
                           container_memory_bytes=320 * 2**20, query_memory_limit_percent=30)
    settings = settings.model_copy(update={"console_live_check_seconds": 3600.0})  # only the job's events refresh
    ids, times = sample_input(big_store.users, 300_000, seed=9)
    async with AsyncJobQueueClient(settings) as client:
        spilling = await client.offline_query(ids, OUTPUT, times, owner="alice", team="risk",
                                              query_name="churn.big",
                                              resources=ResourceRequests(resource_group="tight"))
    to_cancel, bobs = await queued_jobs(settings, "alice", "bob")
    token = await make_token(settings, "alice", Role.USER, "risk")
    with api_in_thread(settings, port=0) as url:
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        await sign_in(page, url, token)
        fetches: list[str] = []  # the table's own requests (not its event stream)
        page.on("request", lambda r: fetches.append(r.url) if r.resource_type in ("xhr", "fetch") else None)
        row = page.locator(f'tr[data-job="{spilling.id}"]')
        await expect(row.get_by_test_id("state")).to_have_text("queued")
        await expect(page.locator(f'tr[data-job="{to_cancel}"]')).to_have_count(1)
        await expect(page.locator(f'tr[data-job="{bobs}"]')).to_have_count(0)  # not in the list...
        await page.evaluate("window.notReloaded = true")
        async with worker_running(settings, "tight"):
            await expect(row.get_by_test_id("state")).to_have_text("succeeded", timeout=120_000)
        assert await page.evaluate("window.notReloaded === true"), "the page reloaded instead of refreshing live"
        refreshes = int(await page.evaluate("document.body.dataset.liveRefreshes || '0'"))
        # queued -> running -> succeeded over the job's changed channel, at most one refresh a second: no polling
        # (the job ran for many seconds; a poll every few seconds would have fetched without an event)
        assert 1 <= len(fetches) <= refreshes, (fetches, refreshes)

        await row.get_by_role("link", name=spilling.id).click()
        await expect(page.get_by_test_id("spill_enabled")).to_have_text("true")
        spilled = int(await page.get_by_test_id("spilled_bytes").inner_text())
        assert spilled > 0
        async with AsyncJobQueueClient(settings) as client:
            summary = (await client.get_job(spilling.id)).summary
        assert summary is not None and spilled == summary.spilled_bytes

        response = await page.goto(f"{url}/jobs/{bobs}")  # ...nor by URL
        assert response is not None and response.status == 404

        await page.goto(f"{url}/jobs/{to_cancel}")
        await expect(page.get_by_test_id("wait-reason")).to_be_visible()
        forged = await page.request.post(f"{url}/jobs/{to_cancel}/cancel", form={"confirm": "yes"}, max_redirects=0)
        assert forged.status == 403  # the session cookie alone is not enough
        await page.get_by_role("link", name="Cancel…").click()
        await expect(page.get_by_role("heading", name="Cancel this job?")).to_be_visible()
        await page.get_by_role("button", name="Cancel the job").click()
        await expect(page).to_have_url(f"{url}/jobs/{to_cancel}")
        await expect(page.get_by_test_id("state")).to_have_text("cancelled")

        await page.get_by_role("button", name="Sign out").click()
        await expect(page).to_have_url(f"{url}/signin")
        await page.goto(f"{url}/jobs")
        await expect(page).to_have_url(f"{url}/signin?next=%2Fjobs")
        assert not [c for c in await page.context.cookies() if c["name"] == "jobqueue_console"]


async def test_an_operator_sees_everyones_jobs_at_400_and_1280_px_without_sideways_scrolling(settings, browser):
    alices, bobs = await queued_jobs(settings, "alice", "bob")
    token = await make_token(settings, "ops", Role.OPERATOR, "platform")
    with api_in_thread(settings, port=0) as url:
        for width in (400, 1280):
            page = await browser.new_page(viewport={"width": width, "height": 800})
            await sign_in(page, url, token)
            await expect(page.locator(f'tr[data-job="{alices}"]')).to_have_count(1)
            await expect(page.locator(f'tr[data-job="{bobs}"]')).to_have_count(1)
            for path in ("/jobs", f"/jobs/{bobs}", f"/jobs/{bobs}/cancel", "/groups"):
                await page.goto(f"{url}{path}")
                assert await page.evaluate(NO_SIDEWAYS_SCROLL), f"{path} scrolls sideways at {width} px"
            await page.get_by_role("button", name="Sign out").click()
            await page.goto(f"{url}/signin")
            assert await page.evaluate(NO_SIDEWAYS_SCROLL), f"/signin scrolls sideways at {width} px"
            await page.close()
