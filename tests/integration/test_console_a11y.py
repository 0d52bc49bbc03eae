"""Every console page (tests/console_pages.py: PAGES) in a real browser at 1280 px and 390 px: axe-core finds no
serious or critical violation, the page never scrolls sideways, its tables scroll inside a focusable named region
and job ids are shown whole. The jobs table works from the keyboard, through the live refresh."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, Locator, Page, expect

from jobqueue import AsyncJobQueueClient
from jobqueue.api.server import api_in_thread
from jobqueue.auth.identity import Role
from jobqueue.models import ResourceRequests
from tests.api_support import make_token
from tests.console_pages import axe_problems, chromium, each_page, layout_problems, new_page, signed_in_page
from tests.helpers import with_groups, worker_running


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


@pytest.fixture
async def console(settings, tmp_path) -> AsyncIterator[tuple[str, str, dict[str, str]]]:
    """The API (and its console) on a fresh environment with an operator's token, a succeeded job (a performance
    summary) and a queued one (on a group no consumer serves): (url, token, ids)."""
    settings = with_groups(settings, tmp_path, {"default": {"max_instances": 1}, "later": {"max_instances": 1}})
    async with AsyncJobQueueClient(settings) as client:
        done = await client.offline_query({"user.id": [1, 2, 3]}, ["user.f0", "user.f1"], owner="alice", team="risk",
                                          query_name="churn.daily", tags={"purpose": "a11y"})
        async with worker_running(settings, "default"):
            await done.wait(timeout=120)
        waiting = await client.offline_query({"user.id": [4]}, ["user.f0"], owner="bob", team="risk",
                                             query_name="churn.hourly",
                                             resources=ResourceRequests(resource_group="later"))
    token = await make_token(settings, "ops", Role.OPERATOR, "platform")
    with api_in_thread(settings, port=0) as url:
        yield url, token, {"succeeded": done.id, "queued": waiting.id}


async def test_every_page_passes_axe_and_fits_1280_and_390_px(console, browser):
    url, token, ids = console
    problems: list[str] = []
    async for page, _, where in each_page(browser, url, token, ids):
        problems += await axe_problems(page, where) + await layout_problems(page, where)
    assert not problems, "\n".join(problems)


async def test_the_axe_check_fails_on_an_unlabelled_control_and_names_it(settings, browser):
    with api_in_thread(settings, port=0) as url:
        page = await new_page(browser, 1280)
        await page.goto(f"{url}/signin")
        await page.evaluate("document.querySelector('label[for=token]').remove()")
        problems = await axe_problems(page, "signin without its label")
    assert len(problems) == 1 and "[critical] label: Form elements must have labels" in problems[0], problems
    assert "at #token: <input" in problems[0]


async def test_job_ids_scroll_inside_the_table_at_390_px_and_show_whole(console, browser):
    url, token, ids = console
    page = await signed_in_page(browser, url, token, 390)
    region = page.get_by_role("region", name="Jobs")
    assert await region.evaluate("r => r.scrollWidth > r.clientWidth"), "the jobs table fits: nothing to scroll"
    link = page.get_by_role("link", name=ids["queued"], exact=True)
    await expect(link).to_have_text(ids["queued"])
    await link.scroll_into_view_if_needed()  # scrolls the region, not the page
    assert await region.evaluate("r => r.scrollLeft") >= 0
    assert await page.evaluate("document.scrollingElement.scrollWidth <= window.innerWidth")
    await page.goto(f"{url}/jobs/{ids['succeeded']}")
    job_id = page.get_by_test_id("job-id")
    await expect(job_id).to_have_text(ids["succeeded"])
    box = await job_id.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390, f"the id leaves the window: {box}"


async def tab_to(target: Locator, limit: int = 60) -> None:
    """Press Tab until `target` has the focus (at most `limit` times)."""
    for _ in range(limit):
        await target.page.keyboard.press("Tab")
        if await target.evaluate("e => e === document.activeElement"):
            return
    raise AssertionError(f"{limit} presses of Tab never reached {target}")


async def next_live_refresh(page: Page) -> None:
    """Wait until htmx has swapped in the next live refresh of the page (an event, not a sleep)."""
    await page.evaluate("""() => new Promise(resolve =>
        document.body.addEventListener('htmx:afterSettle', () => resolve(), {once: true}))""")


async def test_the_jobs_table_works_from_the_keyboard_through_live_refreshes(console, browser):
    url, token, ids = console
    page = await signed_in_page(browser, url, token, 390)

    region = page.get_by_role("region", name="Jobs")
    await tab_to(region)  # the scroll region is a tab stop, and the arrow keys scroll it
    for _ in range(5):
        await page.keyboard.press("ArrowRight")
    await page.wait_for_function("() => document.activeElement.scrollLeft > 0")
    await next_live_refresh(page)
    await expect(region).to_be_focused()  # a refresh neither drops the focus...
    assert await region.evaluate("r => r.scrollLeft > 0"), "the live refresh scrolled the table back"  # ...nor scroll

    link = page.get_by_role("link", name=ids["succeeded"], exact=True)
    await tab_to(link)
    await next_live_refresh(page)
    await expect(link).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(page).to_have_url(f"{url}/jobs/{ids['succeeded']}")
    await expect(page.get_by_test_id("state")).to_have_text("succeeded")
