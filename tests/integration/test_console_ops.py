"""The console's operator pages over plain HTTP (no JavaScript), served by the real API process on the shared Redis:
the queues page follows a group's consumers 0 -> N -> 0 under a real manager with local consumers, with its
sparklines from the manager's history; schedules are paused, resumed and run from their page by an operator (the
API sees it), read-only for a `user` (whose POST is refused); the registry page lists the features of the current
version and the history; and signing in with OIDC's code flow (PKCE, state, nonce) against a local issuer."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import yaml

from jobqueue import AsyncJobQueueClient
from jobqueue.api.server import api_in_thread
from jobqueue.auth.identity import Role
from jobqueue.console.oidc_signin import PendingLogin, PendingLogins
from jobqueue.console.web import COOKIE
from jobqueue.groups import load_groups_config, parse_groups
from jobqueue.keys import ScheduleField
from jobqueue.registry import load_registry
from jobqueue.schedule_control import schedule_state
from jobqueue.schedules import parse_schedules
from manager.backends.local import LocalBackend
from manager.reconcile import Reconciler
from manager.scheduler import Scheduler
from tests.api_support import bearer, make_token
from tests.console_support import csrf_of, sign_in
from tests.helpers import eventually, free_port, running_manager, with_groups
from tests.oidc_provider import AUDIENCE, CONSOLE_CLIENT, IdentityProvider, callback_query


def console(url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, timeout=60)


def cell(page: str, group: str, column: str) -> str:
    """The text of one cell of a group's row on the queues page."""
    row = page.split(f'<tr data-group="{group}">', 1)[1].split("</tr>", 1)[0]
    m = re.search(rf'data-col="{column}">(.*?)</td>', row, re.S)
    assert m, f"no {column} in the row of {group}"
    return re.sub(r"<[^>]+>", " ", m.group(1)).strip()


async def test_the_queues_page_follows_consumers_0_to_n_to_0_with_the_last_hours_lines(settings, tmp_path):
    settings = with_groups(settings, tmp_path, {"default": {"max_instances": 2}}, group_history_seconds=1,
                           scale_to_zero_cooldown_seconds=10)  # consumers stay a while
    token = await make_token(settings, "alice", Role.USER)
    with api_in_thread(settings, port=0) as url:
        async with console(url) as http, running_manager(settings):
            await sign_in(http, token)

            async def page_where(check: str, condition: object) -> str | None:
                page = (await http.get("/queues")).text
                return page if 'data-group="default"' in page and condition(page) else None  # type: ignore[operator]

            idle = await eventually(lambda: page_where("idle", lambda p: cell(p, "default", "consumers") == "0"),
                                    timeout=60, what="the group on the page with no consumers")
            assert "No manager has ticked" not in idle and cell(idle, "default", "bounds") == "0–2"
            assert "no samples yet" in idle or "peak 0, now 0" in cell(idle, "default", "consumers-history")
            async with AsyncJobQueueClient(settings) as client:
                jobs = [await client.offline_query({"user.id": list(range(1, 200))}, ["user.f0"], owner="alice")
                        for _ in range(3)]
                busy = await eventually(lambda: page_where("busy", lambda p: cell(p, "default", "consumers") not in
                                                           ("0", "—")), timeout=120, what="consumers on the page")
                n = int(cell(busy, "default", "consumers"))
                assert 1 <= n <= 2 and int(cell(busy, "default", "desired")) >= 1
                for job in jobs:
                    await job.wait(timeout=120, show_progress=False)
            done = await eventually(lambda: page_where("done", lambda p: cell(p, "default", "consumers") == "0"
                                                       and "now 0" in cell(p, "default", "consumers-history")),
                                    timeout=120, what="the consumers back to 0")
    consumers_line = cell(done, "default", "consumers-history")
    peak = int(re.search(r"peak (\d+)", consumers_line).group(1))  # type: ignore[union-attr]
    assert peak >= 1, consumers_line
    assert int(re.search(r"peak (\d+)", cell(done, "default", "depth-history")).group(1)) >= 1  # type: ignore[union-attr]
    assert re.search(r"0 → [12]: (queue|min_instances)|[12] → [01]: (idle|cooldown)", cell(done, "default", "scaled"))
    svg = done.split('data-col="consumers-history">', 1)[1].split("</svg>", 1)[0]
    assert 'role="img"' in svg and "<title>consumers of default over the last hour: peak" in svg
    points = [tuple(map(float, p.split(","))) for p in re.search(r'points="([^"]+)"', svg).group(1).split()]  # type: ignore[union-attr]
    assert min(y for _, y in points) < max(y for _, y in points), "the line rises above 0 somewhere"
    assert "style=" not in done and "<script>" not in done  # the strict CSP: nothing inline


async def published_schedule(settings, store, name: str = "nightly") -> Scheduler:
    definition = {"name": name, "schedule": "0 * * * *", "output": ["user.f0"], "input": {"user.id": [1, 2]}}
    schedules, errors = parse_schedules({"schedules": [definition]}, load_registry(store.registry_path),
                                        parse_groups(None))
    assert not errors
    client = AsyncJobQueueClient(settings)
    scheduler = Scheduler(client, schedules, errors)
    await scheduler.publish()
    return scheduler


async def test_an_operator_pauses_resumes_and_runs_a_schedule_from_its_page_and_a_user_only_reads(settings, store):
    scheduler = await published_schedule(settings, store)
    t0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    await scheduler.tick(t0 - timedelta(minutes=1))  # armed
    fired = [f for f in await scheduler.tick(t0 + timedelta(seconds=5)) if f.job_id]  # one run: a last job
    await scheduler.client.aclose()
    operator = await make_token(settings, "ops", Role.OPERATOR, "platform")
    user = await make_token(settings, "alice", Role.USER, "risk")
    with api_in_thread(settings, port=0) as url:
        async with console(url) as http:
            await sign_in(http, operator)
            page = await http.get("/schedules")
            assert page.status_code == 200 and 'data-schedule="nightly"' in page.text
            assert 'data-testid="schedule-state">active<' in page.text and "Pause nightly" in page.text
            assert len(fired) == 1 and f'href="/jobs/{fired[0].job_id}"' in page.text
            assert 'data-testid="last-outcome">queued<' in page.text
            csrf = csrf_of(page.text)
            assert (await http.post("/schedules/nightly/pause", data={})).status_code == 403  # no CSRF token
            paused = await http.post("/schedules/nightly/pause", data={"csrf": csrf})
            assert paused.status_code == 303 and paused.headers["location"] == "/schedules?did=pause&name=nightly"
            api = await http.get("/v1/schedules", headers=bearer(operator))
            assert api.json()["schedules"][0]["paused"] is True  # the API sees it at once
            page = (await http.get(paused.headers["location"])).text
            assert "Schedule nightly is paused." in page and 'data-testid="schedule-state">paused<' in page
            assert "Resume nightly" in page and "Pause nightly" not in page
            assert (await http.post("/schedules/nightly/resume", data={"csrf": csrf})).status_code == 303
            assert (await http.get("/v1/schedules", headers=bearer(operator))).json()["schedules"][0]["paused"] is False
            assert (await http.post("/schedules/nightly/run", data={"csrf": csrf})).status_code == 303
            assert (await http.post("/schedules/nope/run", data={"csrf": csrf})).status_code == 404
            assert (await http.post("/schedules/nightly/delete", data={"csrf": csrf})).status_code == 422
        async with AsyncJobQueueClient(settings) as client:
            assert ScheduleField.RUN_REQUESTED.value in await schedule_state(client.redis, client.keys, "nightly")
        async with console(url) as http:
            await sign_in(http, user)
            page = await http.get("/schedules")
            assert page.status_code == 200 and 'data-schedule="nightly"' in page.text
            assert "Pause nightly" not in page.text and "Run nightly now" not in page.text
            forged = await http.post("/schedules/nightly/pause", data={"csrf": csrf_of(page.text)})
            assert forged.status_code == 403 and "operator" in forged.text
            api = await http.get("/v1/schedules", headers=bearer(user))
            assert api.json()["schedules"][0]["paused"] is False  # the refused POST changed nothing


async def test_the_registry_page_lists_the_current_versions_features_and_the_history(settings, store, tmp_path):
    document = yaml.safe_load(store.registry_path.read_text())
    for source in document["namespaces"]["user"]["sources"]:  # v2: one more feature, the same files
        source["path"] = str(store.registry_path.parent / source["path"])
    document["namespaces"]["user"]["sources"][0]["features"].append("f0_copy")
    document["namespaces"]["user"]["sources"][0]["features"] = {
        f: ("f0" if f == "f0_copy" else f) for f in document["namespaces"]["user"]["sources"][0]["features"]}
    v2_file = tmp_path / "v2.yaml"
    v2_file.write_text(yaml.safe_dump(document))
    async with AsyncJobQueueClient(settings) as client:
        v1 = (await client.registries.apply(load_registry(store.registry_path), applied_by="test")).version
        v2 = (await client.registries.apply(load_registry(v2_file), applied_by="test")).version
        registry = load_registry(v2_file)
    token = await make_token(settings, "alice", Role.USER)
    with api_in_thread(settings, port=0) as url:
        async with console(url) as http:
            await sign_in(http, token)
            page = (await http.get("/registry")).text
            assert f'data-testid="version">{v2.id}<' in page and 'data-testid="current">current<' in page
            features = [f"{ns}.{f}" for ns, n in registry.namespaces.items() for f in n.feature_names()]
            assert len(features) == v2.feature_count and "user.f0_copy" in features
            for feature in features:
                assert f'data-feature="{feature}"' in page, feature
            assert re.search(r'data-feature="user.txn_sum_30d">.*?data-col="type">sum\(amount\) over 30d<', page,
                             re.S), "an aggregation's type"
            assert re.search(r'data-feature="user.f0">.*?data-col="type">column f0<', page, re.S)
            assert page.index(f'data-version="{v2.id}"') < page.index(f'data-version="{v1.id}"')  # newest first
            assert f'href="/registry/versions/{v1.id}"' in page
            old = (await http.get(f"/registry/versions/{v1.id}")).text
            assert f'data-testid="version">{v1.id}<' in old and "not current" in old
            assert 'data-feature="user.f0_copy"' not in old and 'data-feature="user.f0"' in old
            assert (await http.get("/registry/versions/99")).status_code == 404


@pytest.fixture
def issuer() -> Iterator[IdentityProvider]:
    provider = IdentityProvider()
    provider.add_key("k1")
    provider.client_secret = "s3cret-of-the-console"
    provider.users = {"carol": {"team": "risk", "jobqueue_role": "operator"}, "dave": {"team": "growth"}}
    yield provider
    provider.close()


async def authorize(http: httpx.AsyncClient, idp: httpx.AsyncClient, username: str, next_path: str = "/queues") -> str:
    """Start the console's sign-in and sign in at the issuer: the callback URL the issuer sends the browser to."""
    start = await http.get("/signin/oidc", params={"next": next_path})
    assert start.status_code == 303, start.text
    binding = start.headers["set-cookie"]
    assert "jobqueue_oidc=" in binding and "HttpOnly" in binding and "SameSite=lax" in binding
    assert "Path=/signin/oidc" in binding
    form_page = await idp.get(start.headers["location"])
    assert form_page.status_code == 200, form_page.text  # the issuer accepted the request (PKCE S256, nonce...)
    fields = dict(re.findall(r'name="([^"]+)" value="([^"]*)"', form_page.text))
    fields = {k: v.replace("&amp;", "&") for k, v in fields.items()}
    back = await idp.post("/authorize", data={**fields, "username": username})
    assert back.status_code == 302, back.text
    return back.headers["location"]


async def test_signing_in_with_oidc_code_flow_pkce_state_and_nonce(settings, issuer):
    settings = settings.model_copy(update={"oidc_issuer": issuer.issuer, "oidc_audience": AUDIENCE,
                                           "oidc_client_id": CONSOLE_CLIENT,
                                           "oidc_client_secret": issuer.client_secret})
    settings = type(settings).model_validate(settings.model_dump())  # the secret as the SecretStr it becomes
    with api_in_thread(settings, port=0) as url:
        async with console(url) as http, httpx.AsyncClient(base_url=issuer.issuer, timeout=30) as idp:
            signin = await http.get("/signin?next=%2Fqueues")
            host = issuer.issuer.split("://")[1]
            assert f"Sign in with {host}" in signin.text and 'href="/signin/oidc?next=/queues"' in signin.text
            callback = await authorize(http, idp, "carol")
            assert callback.startswith(f"{url}/signin/oidc/callback?")
            done = await http.get(callback)
            assert done.status_code == 200 and 'content="0;url=/queues"' in done.text, done.text
            cookie = done.headers.get_list("set-cookie")
            session = next(c for c in cookie if c.startswith(f"{COOKIE}="))
            assert "HttpOnly" in session and "SameSite=strict" in session
            queues = await http.get("/queues")
            assert queues.status_code == 200 and "carol · risk · operator" in queues.text
            sent = issuer.token_requests[-1]
            assert sent["grant_type"] == "authorization_code" and len(sent["code_verifier"]) >= 43
            assert "client_secret" not in sent  # HTTP Basic (the issuer checked it)

            replay = await http.get(callback)  # the same code and state again
            assert replay.status_code == 400 and "used already" in replay.text

            http.cookies.clear()
            elsewhere = await authorize(http, idp, "dave")
            http.cookies.clear()  # another browser: no binding cookie
            other = await http.get(elsewhere)
            assert other.status_code == 400 and "another browser" in other.text and COOKIE not in http.cookies

            issuer.id_token_changes = {"nonce": "not-the-one-sent"}
            wrong_nonce = await http.get(await authorize(http, idp, "dave"))
            assert wrong_nonce.status_code == 400 and "nonce" in wrong_nonce.text and COOKIE not in http.cookies
            issuer.id_token_changes = {"aud": AUDIENCE}  # an ID token for another client than the console
            wrong_aud = await http.get(await authorize(http, idp, "dave"))
            assert wrong_aud.status_code == 401 and "audience" in wrong_aud.text and COOKIE not in http.cookies
            issuer.id_token_changes = {}

            start = await http.get("/signin/oidc")
            state = callback_query(start.headers["location"].replace("/authorize?", "/x?"))["state"]
            denied = await http.get("/signin/oidc/callback", params={"error": "access_denied", "state": state,
                                                                     "error_description": "the user said no"})
            assert denied.status_code == 401 and "access_denied" in denied.text and "the user said no" in denied.text

            issuer.client_secret = "another-secret"
            refused = await http.get(await authorize(http, idp, "dave"))
            assert refused.status_code == 401 and "refused the sign-in code" in refused.text
            assert COOKIE not in http.cookies


async def test_sign_ins_under_way_are_capped_and_one_that_ends_or_expires_frees_its_place(settings, issuer):
    """Anyone may start a sign-in without a token, and each waits in Redis up to 10 minutes: past
    JOBQUEUE_CONSOLE_MAX_PENDING_SIGNINS under way, a start is a 503 naming the setting and stores nothing, so a flood
    of them cannot fill the Redis every job lives in."""
    settings = settings.model_copy(update={"oidc_issuer": issuer.issuer, "oidc_audience": AUDIENCE,
                                           "oidc_client_id": CONSOLE_CLIENT, "oidc_client_secret": issuer.client_secret,
                                           "console_max_pending_signins": 3})
    settings = type(settings).model_validate(settings.model_dump())
    token = await make_token(settings, "alice", Role.USER)
    async with AsyncJobQueueClient(settings, direct=True) as client:

        async def under_way() -> list[str]:
            return [k async for k in client.redis.scan_iter(match=client.keys.oidc_login("*"))]

        with api_in_thread(settings, port=0) as url:
            async with console(url) as http, httpx.AsyncClient(base_url=issuer.issuer, timeout=30) as idp:
                for _ in range(2):
                    assert (await http.get("/signin/oidc")).status_code == 303
                finished = await authorize(http, idp, "carol")  # the third
                refused = await http.get("/signin/oidc")
                assert refused.status_code == 503, refused.text
                assert "JOBQUEUE_CONSOLE_MAX_PENDING_SIGNINS=3" in refused.text and "token" in refused.text
                assert len(await under_way()) == 3  # nothing stored for the refused one

                done = await http.get(finished)
                assert done.status_code == 200 and COOKIE in http.cookies, done.text  # it ends: one place free
                assert len(await under_way()) == 2
                assert (await http.get("/signin/oidc")).status_code == 303
                assert (await http.get("/signin/oidc")).status_code == 503
                http.cookies.clear()
                assert (await sign_in(http, token)).status_code == 303 and COOKIE in http.cookies  # tokens still

        # an abandoned sign-in frees its place when it expires (here after 1 s instead of 10 minutes)
        logins = PendingLogins(client.redis, client.keys, cap=1, seconds=1)
        await client.redis.delete(client.keys.oidc_logins, *await under_way())
        pending = PendingLogin(verifier="v", nonce="n", next="/jobs", browser="b", redirect_uri="http://x/cb")
        assert await logins.start("state-1", pending)
        assert not await logins.start("state-2", pending)
        await eventually(lambda: logins.start("state-3", pending), timeout=10, what="the first sign-in to expire")
        assert await logins.take("state-3") == pending and await logins.take("state-3") is None
        assert await client.redis.zcard(client.keys.oidc_logins) == 0


async def test_without_a_client_id_the_sign_in_page_offers_no_oidc_button(settings, issuer):
    settings = settings.model_copy(update={"oidc_issuer": issuer.issuer, "oidc_audience": AUDIENCE})
    with api_in_thread(settings, port=0) as url:
        async with console(url) as http:
            assert "Sign in with" not in (await http.get("/signin")).text
            assert (await http.get("/signin/oidc")).status_code == 404


async def test_a_group_whose_config_is_broken_shows_the_error_on_the_queues_page(settings, tmp_path, arq_redis):
    settings = with_groups(settings, tmp_path, {"default": {"max_instances": 1},
                                                "broken": {"min_instances": 3, "max_instances": 1}})
    backend = LocalBackend(settings)
    try:  # one tick of the manager's loop, as `jobqueue up` runs it with this file (a broken group is reported)
        await Reconciler(arq_redis, settings, load_groups_config(settings.resource_groups_path), backend).tick()
    finally:
        await backend.aclose()
    token = await make_token(settings, "alice", Role.USER)
    with api_in_thread(settings, port=0) as url:
        async with console(url) as http:
            await sign_in(http, token)
            page = (await http.get("/queues")).text
    problem = cell(page, "broken", "problem")
    assert "min_instances (3) is above max_instances (1)" in problem and "not configured" in page
    assert cell(page, "default", "problem") == "—" and cell(page, "broken", "decision").startswith("config_error")


async def test_an_unreachable_issuer_is_a_page_naming_it_and_the_token_form_still_works(settings):
    nowhere = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    settings = settings.model_copy(update={"oidc_issuer": nowhere, "oidc_audience": AUDIENCE,
                                           "oidc_client_id": CONSOLE_CLIENT})
    token = await make_token(settings, "alice", Role.USER)
    with api_in_thread(settings, port=0) as url:
        async with console(url) as http:
            down = await http.get("/signin/oidc")
            assert down.status_code == 503 and f"cannot reach the sign-in service {nowhere}" in down.text
            assert COOKIE not in http.cookies and "jobqueue_oidc" not in http.cookies
            assert (await sign_in(http, token)).status_code == 303 and COOKIE in http.cookies
