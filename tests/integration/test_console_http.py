"""The web console over plain HTTP (no JavaScript), served by the real API process against the shared Redis: sign-in
and its cookie, the session record, what a `user` and an operator see, filters and cursor pages, cancel through the
confirmation with CSRF (a forged POST is refused), a revoked token ends the session, sign-out."""

from __future__ import annotations

import hashlib
import io

import httpx
import pyarrow.parquet as pq
import redis

from jobqueue import AsyncJobQueueClient, JobStatus
from jobqueue.api.server import api_in_thread
from jobqueue.auth.identity import Role
from jobqueue.auth.tokens import TokenStore
from jobqueue.console import jobs_list
from jobqueue.console.web import COOKIE
from jobqueue.direct_backend import DirectBackend
from jobqueue.keys import Keys
from jobqueue.redis import connect_redis
from tests.api_support import make_token
from tests.console_support import csrf_of, queued_jobs, sign_in
from tests.helpers import eventually, running_manager, with_groups, worker_running


def console(url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, timeout=30)


async def test_sign_in_sets_an_opaque_strict_httponly_cookie_backed_by_redis(settings, served, redis_url):
    token = await make_token(settings, "alice", Role.USER, "risk")
    async with console(served) as http:
        first = await http.get("/jobs?state=queued")
        assert first.status_code == 303 and first.headers["location"] == "/signin?next=%2Fjobs%3Fstate%3Dqueued"
        refused = await sign_in(http, "jq_000000000000_" + "x" * 43)
        assert refused.status_code == 401 and "not known here" in refused.text and COOKIE not in http.cookies
        done = await sign_in(http, token, "/jobs?state=queued")
        assert done.status_code == 303 and done.headers["location"] == "/jobs?state=queued"
        cookie = done.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" not in cookie, cookie  # http here
        value = http.cookies[COOKIE]
        secret = token[len("jq_") + 13:]  # jq_<12 hex id>_<secret>
        assert len(secret) == 43 and secret not in cookie and secret not in value
        page = await http.get("/jobs")
        assert page.status_code == 200 and "alice · risk · user" in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert '<script src="/static/htmx.min.js"' in page.text
        script = await http.get("/static/htmx.min.js")
        assert script.status_code == 200 and "Zero-Clause BSD" in script.text
    key = Keys.for_environment(settings.environment).console_session(hashlib.sha256(value.encode()).hexdigest())
    with redis.Redis.from_url(redis_url) as r:
        record = {k.decode(): v.decode() for k, v in r.hgetall(key).items()}
        assert record["owner"] == "alice" and record["role"] == "user" and record["token_id"]
        assert not any(secret in v for v in record.values()) and 0 < r.ttl(key) <= settings.console_session_seconds


async def test_a_user_sees_only_own_jobs_and_an_operator_sees_everyones(settings, served):
    alice_job, bob_job = await queued_jobs(settings, "alice", "bob")
    alice = await make_token(settings, "alice", Role.USER, "risk")
    operator = await make_token(settings, "ops", Role.OPERATOR, "platform")
    async with console(served) as http:
        await sign_in(http, alice)
        page = (await http.get("/jobs")).text
        assert alice_job in page and bob_job not in page
        assert (await http.get("/jobs?owner=bob")).text.count('data-job="') == 0
        hidden = await http.get(f"/jobs/{bob_job}")  # by URL: not found, as the API answers
        assert hidden.status_code == 404 and bob_job in hidden.text and "no job" in hidden.text
        assert (await http.get(f"/jobs/{bob_job}/cancel")).status_code == 404
        detail = await http.get(f"/jobs/{alice_job}")
        assert detail.status_code == 200 and 'data-testid="wait-reason"' in detail.text
        assert "No summary yet" in detail.text
    async with console(served) as http:
        await sign_in(http, operator)
        page = (await http.get("/jobs")).text
        assert alice_job in page and bob_job in page
        only_bob = (await http.get("/jobs", params={"owner": "bob", "state": "queued", "team": ""})).text
        assert bob_job in only_bob and alice_job not in only_bob
        assert (await http.get("/jobs", params={"state": "nonsense"})).status_code == 400
        assert (await http.get(f"/jobs/{bob_job}")).status_code == 200
        groups = await http.get("/groups")
        assert groups.status_code == 200 and "Resource groups" in groups.text


async def test_cursor_pages_cover_every_job_once(settings, served, monkeypatch):
    monkeypatch.setattr(jobs_list, "PAGE_SIZE", 2)
    ids = await queued_jobs(settings, "ops", "ops", "ops", "ops", "ops")
    operator = await make_token(settings, "ops", Role.OPERATOR)
    seen: list[str] = []
    async with console(served) as http:
        await sign_in(http, operator)
        url: str | None = "/jobs?owner=ops"
        while url:
            page = (await http.get(url)).text
            seen += [i for i in ids if f'data-job="{i}"' in page]
            url = page.split('rel="next"')[0].rsplit('href="', 1)[1].split('"')[0].replace("&amp;", "&") \
                if 'rel="next"' in page else None
    assert sorted(seen) == sorted(ids) and len(seen) == len(set(seen))


async def test_cancel_needs_the_confirmation_forms_csrf_token(settings, served):
    (job_id,) = await queued_jobs(settings, "alice")
    token = await make_token(settings, "alice", Role.USER, "risk")
    async with console(served) as http:
        await sign_in(http, token)
        confirm = await http.get(f"/jobs/{job_id}/cancel")
        assert confirm.status_code == 200 and "Cancel this job?" in confirm.text
        csrf = csrf_of(confirm.text)
        forged = await http.post(f"/jobs/{job_id}/cancel", data={})  # the session cookie, no CSRF field
        assert forged.status_code == 403 and "CSRF" in forged.text
        wrong = await http.post(f"/jobs/{job_id}/cancel", data={"csrf": csrf[:-2] + "xx"})
        assert wrong.status_code == 403
        async with AsyncJobQueueClient(settings) as client:
            assert (await client.get_job(job_id)).status is JobStatus.QUEUED
        done = await http.post(f"/jobs/{job_id}/cancel", data={"csrf": csrf})
        assert done.status_code == 303 and done.headers["location"] == f"/jobs/{job_id}"
        assert 'data-testid="state">cancelled' in (await http.get(f"/jobs/{job_id}")).text
        no_csrf_signout = await http.post("/signout", data={})
        assert no_csrf_signout.status_code == 403
        out = await http.post("/signout", data={"csrf": csrf})
        assert out.status_code == 303 and out.headers["location"] == "/signin"
        assert (await http.get("/jobs")).status_code == 303  # the cookie is gone from the browser...
        http.cookies.clear()
    async with AsyncJobQueueClient(settings) as client:
        assert (await client.get_job(job_id)).status is JobStatus.CANCELLED


async def test_the_session_ends_when_its_token_is_revoked_or_signed_out(settings, served):
    token = await make_token(settings, "alice", Role.USER, "risk")
    async with console(served) as http:
        await sign_in(http, token)
        cookie = http.cookies[COOKIE]
        assert (await http.get("/jobs")).status_code == 200
        redis_client = connect_redis(settings)
        try:
            await TokenStore(redis_client, Keys.for_environment(settings.environment)).revoke(token.split("_")[1])
        finally:
            await redis_client.aclose()
        assert (await http.get("/jobs")).status_code == 303
    async with console(served) as http:  # ...and a copy of a signed-out cookie opens nothing
        http.cookies.set(COOKIE, cookie)
        assert (await http.get("/jobs")).status_code == 303


async def test_sign_in_goes_only_to_a_local_page(settings, served):
    token = await make_token(settings, "alice", Role.USER)
    async with console(served) as http:
        for evil in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
            r = await sign_in(http, token, evil)
            assert r.headers["location"] == "/jobs", evil
        http.cookies.clear()
        # a form another site posts (login CSRF: signing the browser in as someone else) is refused
        other = await http.post("/signin", data={"token": token}, headers={"Origin": "http://evil.example"})
        assert other.status_code == 403 and COOKIE not in http.cookies
        same = await http.post("/signin", data={"token": token}, headers={"Origin": served})
        assert same.status_code == 303 and COOKIE in http.cookies


async def test_a_succeeded_jobs_result_downloads_from_its_page(settings, served):
    async with AsyncJobQueueClient(settings) as client:
        job = await client.offline_query({"user.id": [1, 2, 3]}, ["user.f0"], owner="alice", team="risk")
        async with worker_running(settings):
            await job.wait(timeout=60, show_progress=False)
        direct = await job.to_arrow()
    (queued,) = await queued_jobs(settings, "alice")
    async with console(served) as http:
        await sign_in(http, await make_token(settings, "alice", Role.USER, "risk"))
        page = await http.get(f"/jobs/{job.id}")
        assert f'href="/jobs/{job.id}/result"' in page.text and 'data-testid="spilled_bytes">0<' in page.text
        got = await http.get(f"/jobs/{job.id}/result")
        assert got.status_code == 200 and pq.read_table(io.BytesIO(got.content)).equals(direct)
        assert f'/jobs/{queued}/result"' not in (await http.get(f"/jobs/{queued}")).text
        assert (await http.get(f"/jobs/{queued}/result")).status_code == 409


async def test_the_groups_page_shows_what_jobqueue_status_shows(settings, tmp_path):
    settings = with_groups(settings, tmp_path, {"default": {"max_instances": 2}, "gpu": {"max_instances": 0}})
    token = await make_token(settings, "alice", Role.USER)
    with api_in_thread(settings, port=0) as url:
        async with console(url) as http, running_manager(settings):
            await sign_in(http, token)

            async def both_rows() -> str | None:
                page = (await http.get("/groups")).text
                rows = 'data-group="default"' in page and 'data-group="gpu"' in page
                return page if rows and "No manager has ticked" not in page else None

            page = await eventually(both_rows, timeout=30, what="both groups on the page, the manager ticking")
            async with AsyncJobQueueClient(settings) as client:
                rows = await DirectBackend(client).groups()
    gpu = next(g for g in rows if g.group == "gpu")
    assert f"{gpu.min}–{gpu.max}" in page and "No manager has ticked" not in page

