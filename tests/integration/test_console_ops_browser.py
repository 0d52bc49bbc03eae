"""The console's operator pages in a real browser (Playwright driving Debian's chromium, as
`test_console_browser.py`): the queues page follows a group's consumers 0 -> N -> 0 without a reload under a real
manager with local consumers; an operator pauses a schedule from its page and the API sees it paused; the registry
page lists the features; and a person signs in through the OIDC issuer's own page and lands on the console."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from playwright.async_api import expect

from jobqueue import AsyncJobQueueClient
from jobqueue.api.server import api_in_thread
from jobqueue.auth.identity import Role
from jobqueue.console import queues
from jobqueue.registry import load_registry
from tests.api_support import bearer, make_token
from tests.helpers import running_manager, with_groups
from tests.integration.test_console_browser import NO_SIDEWAYS_SCROLL, browser, sign_in  # noqa: F401 (fixture)
from tests.integration.test_console_ops import published_schedule
from tests.oidc_provider import AUDIENCE, CONSOLE_CLIENT, IdentityProvider


async def test_the_queues_page_shows_consumers_0_then_n_then_0_without_a_reload(settings, tmp_path, browser,  # noqa: F811
                                                                                  monkeypatch):
    monkeypatch.setattr(queues, "REFRESH_SECONDS", 1)  # the page polls every second: short-lived consumers show
    settings = with_groups(settings, tmp_path, {"default": {"max_instances": 2}}, group_history_seconds=1,
                           scale_to_zero_cooldown_seconds=10)
    token = await make_token(settings, "ops", Role.OPERATOR)
    with api_in_thread(settings, port=0) as url:
        async with running_manager(settings), AsyncJobQueueClient(settings) as client:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            await sign_in(page, url, token)
            await page.goto(f"{url}/queues")
            consumers = page.locator('tr[data-group="default"] td[data-col="consumers"]')
            await expect(consumers).to_have_text("0", timeout=60_000)
            await page.evaluate("window.notReloaded = true")
            jobs = [await client.offline_query({"user.id": list(range(1, 200))}, ["user.f0"], owner="ops")
                    for _ in range(3)]
            await expect(consumers).to_have_text(re.compile(r"^[12]$"), timeout=120_000)
            for job in jobs:
                await job.wait(timeout=120, show_progress=False)
            await expect(consumers).to_have_text("0", timeout=120_000)
            history = page.locator('tr[data-group="default"] td[data-col="consumers-history"] svg')
            await expect(history).to_have_attribute(
                "aria-label", re.compile(r"consumers of default over the last hour: peak [12], now 0"), timeout=60_000)
            assert await page.evaluate("window.notReloaded === true"), "the page reloaded instead of refreshing"
            assert await page.evaluate(NO_SIDEWAYS_SCROLL)
            await page.close()


async def test_an_operator_pauses_a_schedule_from_its_page_and_the_api_sees_it(settings, store, browser):  # noqa: F811
    scheduler = await published_schedule(settings, store)
    await scheduler.tick(datetime.now(UTC) - timedelta(minutes=1))
    await scheduler.client.aclose()
    token = await make_token(settings, "ops", Role.OPERATOR)
    with api_in_thread(settings, port=0) as url:
        page = await browser.new_page(viewport={"width": 390, "height": 844})
        await sign_in(page, url, token)
        await page.get_by_role("link", name="Schedules").click()
        row = page.locator('tr[data-schedule="nightly"]')
        await expect(row.get_by_test_id("schedule-state")).to_have_text("active")
        await page.get_by_role("button", name="Pause nightly").click()
        await expect(page.get_by_test_id("notice")).to_have_text("Schedule nightly is paused.")
        await expect(row.get_by_test_id("schedule-state")).to_have_text("paused")
        answer = httpx.get(f"{url}/v1/schedules", headers=bearer(token))
        assert answer.json()["schedules"][0]["paused"] is True
        assert await page.evaluate(NO_SIDEWAYS_SCROLL), "/schedules scrolls sideways at 390 px"
        await page.get_by_role("button", name="Resume nightly").click()
        await expect(row.get_by_test_id("schedule-state")).to_have_text("active")
        await page.close()


async def test_the_registry_page_lists_the_features(settings, store, browser):  # noqa: F811
    async with AsyncJobQueueClient(settings) as client:
        version = (await client.registries.apply(load_registry(store.registry_path), applied_by="test")).version
    token = await make_token(settings, "alice", Role.USER)
    with api_in_thread(settings, port=0) as url:
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        await sign_in(page, url, token)
        await page.get_by_role("link", name="Registry").click()
        await expect(page.get_by_test_id("version")).to_have_text(version.id)
        features = page.locator("tr[data-feature]")
        await expect(features).to_have_count(version.feature_count)
        await expect(page.locator('tr[data-feature="user.txn_sum_30d"] td[data-col="type"]')).to_have_text(
            "sum(amount) over 30d")
        await page.get_by_role("link", name=version.id).click()
        await expect(page).to_have_url(f"{url}/registry/versions/{version.id}")
        await page.close()


@pytest.fixture
def other_site_issuer() -> Iterator[IdentityProvider]:
    """The issuer on another site than the console (localhost, not 127.0.0.1): its redirect back is cross-site."""
    provider = IdentityProvider(host="localhost")
    provider.add_key("k1")
    provider.users = {"carol": {"team": "risk", "jobqueue_role": "operator"}}
    yield provider
    provider.close()


async def test_signing_in_through_the_oidc_issuer_lands_on_the_page_asked_for(settings, other_site_issuer,
                                                                              browser):  # noqa: F811
    """Also: the issuer's redirect back is a cross-site navigation, on which a browser does not send a
    SameSite=Strict cookie; a redirect from the callback to the page (still that navigation) found no session."""
    issuer = other_site_issuer  # a public client: PKCE alone
    settings = settings.model_copy(update={"oidc_issuer": issuer.issuer, "oidc_audience": AUDIENCE,
                                           "oidc_client_id": CONSOLE_CLIENT})
    with api_in_thread(settings, port=0) as url:
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        await page.goto(f"{url}/queues")
        await expect(page).to_have_url(f"{url}/signin?next=%2Fqueues")
        host = issuer.issuer.split("://")[1]
        await page.get_by_role("link", name=f"Sign in with {host}").click()
        await expect(page).to_have_url(re.compile(re.escape(f"{issuer.issuer}/authorize?")))
        await page.get_by_label("Username").fill("carol")
        await page.get_by_role("button", name="Continue").click()
        await expect(page).to_have_url(f"{url}/queues", timeout=30_000)
        await expect(page.get_by_test_id("who")).to_have_text("carol · risk · operator")
        await expect(page.get_by_role("heading", name="Queues and consumers")).to_be_visible()
        await page.close()
