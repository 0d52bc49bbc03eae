"""Listing jobs through the indexes, over HTTP (`GET /v1/jobs`) and in the console's jobs page, against the real API
server and the shared Redis: each filter and each sort (both ways) gives exactly the jobs and the order worked out
from the records themselves, across cursor pages; a `user` sees only their own; the console's bulk cancel confirms
the count it then cancels, under the same policy."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import httpx

from jobqueue.api.listing import find_page
from jobqueue.api.server import api_in_thread
from jobqueue.auth.identity import Role
from jobqueue.console import jobs_list
from jobqueue.jobstore import JobStore
from jobqueue.keys import Keys
from jobqueue.listing_plan import ListingQuery, Position
from jobqueue.models import JobRecord, JobStatus
from jobqueue.redis import connect_redis
from tests.api_support import bearer, make_token
from tests.console_support import csrf_of, sign_in

T0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
OWNERS, TEAMS, GROUPS = ("alice", "bob", "carol"), ("risk", "ml"), ("default", "gpu")
N = 18


class Clock:
    now = T0

    def __call__(self) -> datetime:
        return self.now


async def seed(settings) -> list[JobRecord]:
    """N jobs: every third queued, running or finished (in turn succeeded, failed, cancelled), a minute apart, with
    waits and durations that differ from the submission order; returned as their records now."""
    redis = connect_redis(settings)
    keys = Keys.for_environment(settings.environment)
    clock = Clock()
    store = JobStore(redis, keys, 3600, clock)
    ids = []
    try:
        for i in range(N):
            group = GROUPS[i % 2]
            rec = JobRecord(job_id=f"j{i:02d}-{uuid.uuid4().hex[:6]}", status=JobStatus.QUEUED, resource_group=group,
                            output=["user.f0"], input_rows=1, submitted_at=T0 + timedelta(minutes=i),
                            owner=OWNERS[i % 3], team=TEAMS[i % 2], query_name=f"q{i % 4}",
                            tags={"project": "churn" if i % 3 == 0 else "ltv"})
            assert await store.submit(rec, keys.queue(group), b"{}", 3_600_000)
            ids.append(rec.job_id)
        for i, job in enumerate(ids):
            if i % 3 == 0:
                continue
            clock.now = T0 + timedelta(minutes=i, seconds=(i * 7) % 50)
            assert (await store.claim(job, f"c{i}", GROUPS[i % 2], 600)).claimed
            if i % 3 == 2:
                clock.now += timedelta(seconds=(i * 13) % 40 + 1)
                outcome = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)[i % 9 // 3]
                assert await store.transition(job, [JobStatus.RUNNING], outcome, owner=f"c{i}",
                                              finished_at=clock.now) == 1
        return [r for r in await store.get_many(ids) if r is not None]
    finally:
        await redis.aclose()


def wait_of(r: JobRecord) -> float | None:
    return (r.started_at - r.submitted_at).total_seconds() if r.started_at else None


def duration_of(r: JobRecord) -> float | None:
    if r.started_at is None or r.finished_at is None:
        return None
    return (r.finished_at - r.started_at).total_seconds()


def expected(records: list[JobRecord], keep, sort: str = "submitted", order: str = "desc") -> list[str]:
    """What a listing must show, from the records: the kept jobs that have the sort's value, in its order (ties by
    job id, the same way round)."""
    value = {"submitted": lambda r: r.submitted_at.timestamp(), "wait": wait_of, "duration": duration_of}[sort]
    rows = [(value(r), r.job_id) for r in records if keep(r) and value(r) is not None]
    return [job for _, job in sorted(rows, reverse=order == "desc")]


FILTERS = {  # name -> (query parameters, which records match)
    "owner": ({"owner": "bob"}, lambda r: r.owner == "bob"),
    "team": ({"team": "ml"}, lambda r: r.team == "ml"),
    "state": ({"state": "running"}, lambda r: r.status is JobStatus.RUNNING),
    "resource_group": ({"resource_group": "gpu"}, lambda r: r.resource_group == "gpu"),
    "tag": ({"tag": "project=churn"}, lambda r: r.tags.get("project") == "churn"),
    "query_name": ({"query_name": "q1"}, lambda r: r.query_name == "q1"),
    "submitted_after": ({"submitted_after": (T0 + timedelta(minutes=10)).isoformat()},
                        lambda r: r.submitted_at >= T0 + timedelta(minutes=10)),
    "submitted_before": ({"submitted_before": (T0 + timedelta(minutes=4)).isoformat()},
                         lambda r: r.submitted_at <= T0 + timedelta(minutes=4)),
    "two": ({"team": "risk", "state": "queued"}, lambda r: r.team == "risk" and r.status is JobStatus.QUEUED),
}


async def api_listing(http: httpx.AsyncClient, params: dict[str, str]) -> list[str]:
    """Every job of a listing, following its cursors 4 at a time."""
    seen: list[str] = []
    cursor = None
    while True:
        page = await http.get("/v1/jobs", params={**params, "limit": 4, **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200, page.text
        body = page.json()
        seen += [j["job_id"] for j in body["jobs"]]
        cursor = body["next_cursor"]
        if not cursor:
            return seen


async def test_each_filter_and_sort_over_http(settings, served):
    records = await seed(settings)
    token = await make_token(settings, "ops", Role.OPERATOR)
    async with httpx.AsyncClient(base_url=served, headers=bearer(token), timeout=30) as http:
        for name, (params, keep) in FILTERS.items():
            want = expected(records, keep)
            assert want, name
            assert await api_listing(http, params) == want, name
        for sort in ("submitted", "wait", "duration"):
            for order in ("desc", "asc"):
                want = expected(records, lambda r: True, sort, order)
                assert await api_listing(http, {"sort": sort, "order": order}) == want, (sort, order)
                team = expected(records, lambda r: r.team == "risk", sort, order)
                assert await api_listing(http, {"sort": sort, "order": order, "team": "risk"}) == team


async def test_a_users_listing_holds_only_their_own_jobs(settings, served):
    records = await seed(settings)
    token = await make_token(settings, "alice", Role.USER, "risk")
    async with httpx.AsyncClient(base_url=served, headers=bearer(token), timeout=30) as http:
        assert await api_listing(http, {}) == expected(records, lambda r: r.owner == "alice")
        assert await api_listing(http, {"owner": "bob"}) == []
        assert await api_listing(http, {"sort": "wait", "team": "ml"}) == \
            expected(records, lambda r: r.owner == "alice" and r.team == "ml", "wait")


async def test_a_user_who_sees_their_teams_jobs_lists_them_and_reads_no_other_record(settings, monkeypatch):
    """JOBQUEUE_USERS_SEE_TEAM_JOBS: alice of risk lists her jobs and risk's, with each filter and sort across pages,
    and the listing reads only the records of those (the union of her owner index and risk's), not every job's."""
    settings = settings.model_copy(update={"users_see_team_jobs": True})
    records = await seed(settings)
    by_id = {r.job_id: r for r in records}

    def visible(r: JobRecord) -> bool:
        return r.owner == "alice" or r.team == "risk"

    assert any(not visible(r) for r in records)
    read: list[str] = []
    get_many = JobStore.get_many

    async def reading(self: JobStore, job_ids: list[str]) -> list[JobRecord | None]:
        read.extend(job_ids)
        return await get_many(self, job_ids)

    monkeypatch.setattr(JobStore, "get_many", reading)  # the API serves from a thread of this process
    token = await make_token(settings, "alice", Role.USER, "risk")
    with api_in_thread(settings, port=0) as url:
        async with httpx.AsyncClient(base_url=url, headers=bearer(token), timeout=30) as http:
            for sort in ("submitted", "wait", "duration"):
                for order in ("desc", "asc"):
                    assert await api_listing(http, {"sort": sort, "order": order}) == \
                        expected(records, visible, sort, order), (sort, order)
            for name, (params, keep) in FILTERS.items():
                assert await api_listing(http, params) == \
                    expected(records, lambda r, keep=keep: keep(r) and visible(r)), name
            cancel = await http.post("/v1/jobs/cancel", json={"state": "queued"})
            assert cancel.status_code == 200, cancel.text
            queued = [r.job_id for r in records if r.status is JobStatus.QUEUED]
            assert sorted(cancel.json()["job_ids"]) == sorted(j for j in queued if visible(by_id[j]))
    assert read and [j for j in read if not visible(by_id[j])] == []


async def test_the_union_of_two_indexes_is_walked_in_order_through_ties_longer_than_a_batch(settings):
    """The walk over a user's owner index and team index, merged: 450 jobs submitted in the same millisecond (a run
    of ties longer than a batch of 200) and 30 later ones, some in one index, some in both, some in neither; every
    page size, both ways, gives each visible job once, in (submission, job id) order, and the cursor goes on across
    the ties."""
    redis = connect_redis(settings)
    keys = Keys.for_environment(settings.environment)
    store = JobStore(redis, keys, 3600)
    records = []
    try:
        for i in range(480):
            owner, team = [("alice", "risk"), ("alice", "ml"), ("bob", "risk"), ("bob", "ml")][i % 4]
            at = T0 if i < 450 else T0 + timedelta(seconds=i)
            rec = JobRecord(job_id=f"t{(i * 37) % 480:03d}", status=JobStatus.QUEUED, resource_group="default",
                            output=["user.f0"], input_rows=1, submitted_at=at, owner=owner, team=team)
            assert await store.submit(rec, keys.queue("default"), b"{}", 3_600_000)
            records.append(rec)
        visible = [r for r in records if r.owner == "alice" or r.team == "risk"]
        for descending in (True, False):
            want = [r.job_id for r in sorted(visible, key=lambda r: (r.submitted_at, r.job_id), reverse=descending)]
            for limit in (7, 200, 1000):
                seen: list[str] = []
                cursor: str | None = None
                while True:
                    query = ListingQuery(limit=limit, descending=descending, only_owner="alice", also_team="risk",
                                         after=Position.decode(cursor) if cursor else None)
                    page, cursor = await find_page(store, redis, keys, query, lambda r: True, 10_000)
                    seen += [r.job_id for r in page]
                    if cursor is None:
                        break
                assert seen == want, (descending, limit)
    finally:
        await redis.aclose()


def job_ids(page: str) -> list[str]:
    return re.findall(r'<tr data-job="([^"]+)"', page)


async def console_listing(http: httpx.AsyncClient, url: str) -> list[str]:
    seen: list[str] = []
    next_url: str | None = url
    while next_url:
        page = await http.get(next_url)
        assert page.status_code == 200, page.text
        seen += job_ids(page.text)
        m = re.search(r'<a href="([^"]+)" rel="next"', page.text)
        next_url = m.group(1).replace("&amp;", "&") if m else None
    return seen


async def test_each_filter_and_sort_in_the_console(settings, served, monkeypatch):
    monkeypatch.setattr(jobs_list, "PAGE_SIZE", 5)
    records = await seed(settings)
    token = await make_token(settings, "ops", Role.OPERATOR)
    async with httpx.AsyncClient(base_url=served, timeout=30) as http:
        await sign_in(http, token)
        for name, (params, keep) in FILTERS.items():
            assert await console_listing(http, "/jobs?" + urlencode(params)) == expected(records, keep), name
        first = (await http.get("/jobs?team=ml")).text
        for sort in ("submitted", "wait", "duration"):
            # the column header's link (no JavaScript) sorts, and the same link on the sorted page turns it round
            link = re.search(rf'<a href="([^"]+)" data-sort="{sort}"', first)
            assert link, sort
            url = link.group(1).replace("&amp;", "&")
            order = "asc" if sort == "submitted" else "desc"  # already newest first: its link turns it round
            assert await console_listing(http, url) == expected(records, lambda r: r.team == "ml", sort, order)
            again = re.search(rf'<a href="([^"]+)" data-sort="{sort}"', (await http.get(url)).text)
            assert again
            flipped = "desc" if order == "asc" else "asc"
            assert await console_listing(http, again.group(1).replace("&amp;", "&")) == \
                expected(records, lambda r: r.team == "ml", sort, flipped)


def count_of(page: str) -> int:
    m = re.search(r'data-testid="count"><strong>(\d+)</strong>', page)
    assert m, page
    return int(m.group(1))


async def test_bulk_cancel_confirms_the_count_it_cancels_under_the_policy(settings, served):
    records = await seed(settings)
    cancellable = [r for r in records if r.team == "risk" and not r.status.is_final]
    alices = [r for r in cancellable if r.owner == "alice"]
    assert alices and len(alices) < len(cancellable)
    user = await make_token(settings, "alice", Role.USER, "risk")
    operator = await make_token(settings, "ops", Role.OPERATOR)
    async with httpx.AsyncClient(base_url=served, timeout=30) as http:
        await sign_in(http, user)
        jobs = (await http.get("/jobs?team=risk")).text
        link = re.search(r'<a href="([^"]+)" class="danger" data-testid="bulk-cancel"', jobs)
        assert link
        confirm = await http.get(link.group(1).replace("&amp;", "&"))
        assert confirm.status_code == 200 and count_of(confirm.text) == len(alices)
        forged = await http.post("/jobs/bulk-cancel", data={"team": "risk"})
        assert forged.status_code == 403
        done = await http.post("/jobs/bulk-cancel", data={"team": "risk", "csrf": csrf_of(confirm.text)})
        assert done.status_code == 303 and f"cancelled={len(alices)}" in done.headers["location"]
        shown = await http.get(done.headers["location"])
        assert f"Cancelled {len(alices)} job" in shown.text
        assert count_of((await http.get("/jobs/bulk-cancel?team=risk")).text) == 0
        assert (await http.get("/jobs/bulk-cancel")).status_code == 400  # no filter: nothing is cancelled by accident
    async with httpx.AsyncClient(base_url=served, timeout=30) as http:
        await sign_in(http, operator)
        confirm = await http.get("/jobs/bulk-cancel?team=risk")
        others = len(cancellable) - len(alices)
        assert count_of(confirm.text) == others
        done = await http.post("/jobs/bulk-cancel", data={"team": "risk", "csrf": csrf_of(confirm.text)})
        assert f"cancelled={others}" in done.headers["location"]
    redis = connect_redis(settings)
    try:
        now = await JobStore(redis, Keys.for_environment(settings.environment), 3600).get_many(
            [r.job_id for r in records])
    finally:
        await redis.aclose()
    for before, after in zip(records, now, strict=True):
        assert after is not None
        if before.team == "risk" and before.status is JobStatus.QUEUED:
            assert after.status is JobStatus.CANCELLED
        elif before.team == "risk" and before.status is JobStatus.RUNNING:
            assert after.cancel_requested
        else:
            assert after.status is before.status and not after.cancel_requested
