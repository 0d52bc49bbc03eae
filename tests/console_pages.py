"""The console's pages for the checks every page gets in a real browser (axe-core, widths, keyboard) and for the
README's screenshots (docs/console/screenshots.py). A new page joins all of them with one line in `PAGES`.

    async with chromium() as browser:
        async for page, console_page, where in each_page(browser, url, token, ids):
            problems = await axe_problems(page, where) + await layout_problems(page, where)

Chromium is Debian's /usr/bin/chromium (`make browser`), driven by Playwright; nothing downloads a browser. axe-core
is vendored in tests/vendor/axe-core (its licence beside it; tests/unit/test_vendored_axe.py pins its sha256).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, Page, async_playwright, expect

CHROMIUM = Path(os.environ.get("JOBQUEUE_TEST_CHROMIUM", "/usr/bin/chromium"))
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run"]
AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"
AXE_SHA256 = "29348999450cdf2849a8e70b7912fc2da85a849da39c0d0d5394f51d4a9ed95c"  # axe-core 4.14.1 (npm pack)
BLOCKING = ("serious", "critical")  # axe impacts that fail the check; the others are printed
WIDTHS = (1280, 390)  # a laptop and a phone
HEIGHT = 860


@dataclass(frozen=True)
class ConsolePage:
    """One console page: `name` names its screenshot (`docs/console/<name>-<width>.png`) and its failures; `path`
    is formatted with the ids of the jobs the checks made (`{succeeded}`: a finished job with a performance summary,
    `{queued}`: one that waits); `signed_in=False` for the pages a visitor sees."""

    name: str
    path: str
    signed_in: bool = True


PAGES = (
    ConsolePage("signin", "/signin", signed_in=False),
    ConsolePage("jobs", "/jobs"),
    ConsolePage("job", "/jobs/{succeeded}"),
    ConsolePage("job-queued", "/jobs/{queued}"),
    ConsolePage("cancel", "/jobs/{queued}/cancel"),
    ConsolePage("queues", "/queues"),
    ConsolePage("schedules", "/schedules"),
    ConsolePage("registry", "/registry"),
)


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    assert CHROMIUM.exists(), f"no {CHROMIUM}: `make browser` installs Debian's chromium (apt-get install chromium)"
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS, headless=True)
        try:
            yield browser
        finally:
            await browser.close()


# htmx's live refresh, cancelled before its first request: a swap in the middle of a check would move the nodes
# it reads, or a screenshot would catch half a page.
NO_LIVE_REFRESH = "document.addEventListener('htmx:beforeRequest', e => e.preventDefault())"


async def new_page(browser: Browser, width: int, height: int = HEIGHT, live: bool = True) -> Page:
    """A page of a new context (its own cookies) with axe-core loaded in every document: an init script, as the
    console's Content-Security-Policy allows no injected <script>. `live=False`: no live refresh."""
    context = await browser.new_context(viewport={"width": width, "height": height})
    await context.add_init_script(path=AXE)
    if not live:
        await context.add_init_script(script=NO_LIVE_REFRESH)
    return await context.new_page()


async def signed_in_page(browser: Browser, url: str, token: str, width: int, height: int = HEIGHT,
                         live: bool = True) -> Page:
    """A new page, signed in with `token` through the form: on /jobs."""
    page = await new_page(browser, width, height, live)
    await page.goto(f"{url}/signin")
    await page.get_by_label("Token").fill(token)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_url(f"{url}/jobs")
    return page


async def each_page(browser: Browser, url: str, token: str, ids: Mapping[str, str],
                    widths: tuple[int, ...] = WIDTHS) -> AsyncIterator[tuple[Page, ConsolePage, str]]:
    """Every page of `PAGES` at every width, loaded (signed in, or not for a visitor's page) without live refresh,
    so that a check sees one document: (the browser's page, the console page, where: its name, path and width)."""
    for width in widths:
        member = await signed_in_page(browser, url, token, width, live=False)
        visitor = await new_page(browser, width, live=False)
        try:
            for console_page in PAGES:
                page = member if console_page.signed_in else visitor
                path = console_page.path.format(**ids)
                response = await page.goto(f"{url}{path}")
                assert response is not None and response.ok, f"{path}: {response.status if response else '-'}"
                assert page.url == f"{url}{path}", f"{path} went to {page.url}"
                yield page, console_page, f"{console_page.name} ({path}) at {width} px"
        finally:
            await member.context.close()
            await visitor.context.close()


async def axe_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's violations of the whole document (its default rules: WCAG 2.x A and AA, best practices)."""
    violations: list[dict[str, Any]] = await page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations")
    return violations


def describe(violations: list[dict[str, Any]]) -> str:
    """One readable block per violation: impact, rule, what it asks, and each offending element with axe's fix."""
    lines = []
    for v in violations:
        lines.append(f"  [{v['impact']}] {v['id']}: {v['help']} ({v['helpUrl']})")
        for node in v["nodes"]:
            summary = " ".join(str(node.get("failureSummary") or "").split())
            lines.append(f"      at {' '.join(map(str, node['target']))}: {node['html'][:160]}")
            lines.append(f"         {summary}")
    return "\n".join(lines)


async def axe_problems(page: Page, where: str) -> list[str]:
    """The serious and critical violations as one readable failure (the milder ones are printed, not failed)."""
    violations = await axe_violations(page)
    blocking = [v for v in violations if v["impact"] in BLOCKING]
    milder = [v for v in violations if v["impact"] not in BLOCKING]
    if milder:
        print(f"axe, not failing, {where}:\n{describe(milder)}")
    return [f"axe, {where}:\n{describe(blocking)}"] if blocking else []


# The page's layout at this width: nothing wider than the window, every table in a focusable named region with an
# id that scrolls it (`<div class="scroll" id="…" tabindex="0" role="region" aria-label="…">`,
# or aria-labelledby), and every id (`.id`)
# shown whole (never cut, never ellipsised) and selectable.
LAYOUT = """() => {
  const problems = [];
  const root = document.scrollingElement;
  if (root.scrollWidth > window.innerWidth) {
    const wide = [...document.querySelectorAll('body *')]
      .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)
      .slice(0, 3).map(e => e.tagName.toLowerCase() + (e.className ? '.' + e.className : ''));
    problems.push(`the page scrolls sideways: ${root.scrollWidth} px wide in a ${window.innerWidth} px window `
                  + `(the widest: ${wide})`);
  }
  for (const table of document.querySelectorAll('main table')) {
    const region = table.closest('.scroll');
    if (!region) { problems.push(`a table (${table.className}) is not inside a .scroll region`); continue; }
    if (getComputedStyle(region).overflowX !== 'auto')
      problems.push(`.scroll of table.${table.className} does not scroll`);
    if (region.tabIndex !== 0) problems.push(`the region of table.${table.className} is not focusable (tabindex=0)`);
    if (!region.id) problems.push(`the region of table.${table.className} has no id (a live refresh keeps an id's `
                                  + `focus and scroll position: static/console.js)`);
    if (region.getAttribute('role') !== 'region'
        || !(region.getAttribute('aria-label') || region.getAttribute('aria-labelledby')))
      problems.push(`the region of table.${table.className} has no role=region and aria-label(ledby)`);
  }
  for (const id of document.querySelectorAll('.id')) {
    const text = id.textContent.trim();
    if (id.scrollWidth > id.clientWidth + 1 && getComputedStyle(id).overflowX !== 'visible')
      problems.push(`id ${text} is cut (${id.clientWidth} of ${id.scrollWidth} px shown)`);
    if (getComputedStyle(id).textOverflow === 'ellipsis') problems.push(`id ${text} is ellipsised`);
    if (getComputedStyle(id).userSelect === 'none') problems.push(`id ${text} cannot be selected`);
  }
  return problems;
}"""


async def layout_problems(page: Page, where: str) -> list[str]:
    problems: list[str] = await page.evaluate(LAYOUT)
    return [f"layout, {where}: {p}" for p in problems]
