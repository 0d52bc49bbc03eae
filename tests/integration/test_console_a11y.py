"""Every console page (tests/console_pages.py: PAGES) in a real browser at 1280 px and 390 px: axe-core finds no
serious or critical violation, the page never scrolls sideways, its tables scroll inside a focusable named region
and job ids are shown whole. The jobs table works from the keyboard, through the live refresh."""

from __future__ import annotations

import asyncio
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


INSIDE = """(e, region) => { const a = e.getBoundingClientRect(), b = region.getBoundingClientRect();
                               return a.left >= b.left && a.right <= b.right; }"""
SELECTED = """e => { const range = document.createRange(); range.selectNodeContents(e);
                   const s = getSelection(); s.removeAllRanges(); s.addRange(range); return s.toString(); }"""


async def test_at_390_px_the_jobs_table_scrolls_in_its_region_and_ids_show_whole(console, browser):
    url, token, ids = console
    page = await signed_in_page(browser, url, token, 390)
    region = page.get_by_role("region", name="Jobs")
    link = region.get_by_role("link", name=ids["queued"], exact=True)
    state = region.locator(f'tr[data-job="{ids["queued"]}"]').get_by_test_id("state")
    await expect(link).to_have_text(ids["queued"])
    assert await link.evaluate(INSIDE, await region.element_handle()), "the id is cut by its region"
    assert not await state.evaluate(INSIDE, await region.element_handle()), "the table was squeezed to 390 px"
    await state.scroll_into_view_if_needed()
    assert await state.evaluate(INSIDE, await region.element_handle()), "the region does not scroll to the state"
    assert await region.evaluate("r => r.scrollLeft > 0") and await page.evaluate("window.scrollX === 0")

    await page.goto(f"{url}/jobs/{ids['succeeded']}")
    job_id = page.get_by_test_id("job-id")
    box = await job_id.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390, f"the id leaves the window: {box}"
    assert await job_id.evaluate(SELECTED) == ids["succeeded"]  # wrapped on a phone, it still copies whole


async def tab_to(target: Locator, limit: int = 60) -> None:
    """Press Tab until `target` has the focus (at most `limit` times)."""
    for _ in range(limit):
        await target.page.keyboard.press("Tab")
        if await target.evaluate("e => e === document.activeElement"):
            return
    raise AssertionError(f"{limit} presses of Tab never reached {target}")


async def next_live_refresh(page: Page) -> None:
    """Wait until htmx has swapped in the next live refresh of the page (an event, not a sleep; it polls every 3 s)."""
    await asyncio.wait_for(page.evaluate("""() => new Promise(resolve =>
        document.body.addEventListener('htmx:afterSettle', () => resolve(), {once: true}))"""), 60)


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
