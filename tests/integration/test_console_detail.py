"""The console's job page over plain HTTP against the real API process, the shared Redis and a real consumer: live
updates over server-sent events driven by `JobStore`'s changed channel (queued → running → succeeded, no polling),
the stream's policy (another owner's job: 404), its cap per sign-in and its end when the token is revoked, the
attempts timeline with each attempt's start, end and error, the spilling summary card, the first 50 result rows read
from the first row group(s) only (local and S3), log lines, and HTML error pages on the console's paths."""

from __future__ import annotations

import asyncio
import json
import re
import statistics
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from jobqueue import AsyncJobQueueClient, JobStatus
from jobqueue.api.server import api_in_thread
from jobqueue.auth.identity import Role
from jobqueue.auth.tokens import TokenStore
from jobqueue.console.preview import read_preview
from jobqueue.console.sessions import cookie_digest
from jobqueue.console.web import COOKIE
from jobqueue.jobstore import JobStore
from jobqueue.keys import Keys
from jobqueue.models import ResourceRequests
from jobqueue.redis import connect_redis
from jobqueue.sample import sample_input
from jobqueue.storage import Storage
from tests.api_support import make_token
from tests.console_support import queued_jobs, sign_in
from tests.helpers import eventually, with_groups, worker_running

OUTPUT = ["user.f0", "user.f1", "user.logins", "user.segment"]
STATE_RE = re.compile(r'data-testid="state">([a-z]+)<')


def console(url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, timeout=60)


async def events(response: httpx.Response) -> AsyncIterator[tuple[str, str]]:
    """The (event, data) pairs of a server-sent event stream."""
    name, data = "message", []
    async for line in response.aiter_lines():
        if line == "":
            if data:
                yield name, "\n".join(data)
            name, data = "message", []
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[6:] if line.startswith("data: ") else line[5:])


async def next_event(stream: AsyncIterator[tuple[str, str]], timeout: float = 60) -> tuple[str, str]:
    return await asyncio.wait_for(anext(stream), timeout)


def state_of(card: str) -> str:
    m = STATE_RE.search(card)
    assert m, card[:500]
    return m.group(1)


async def test_the_live_stream_follows_a_job_from_queued_to_running_to_succeeded_by_its_changed_channel(
        settings, served):
    """Driven by the transitions themselves (JobStore's claim and final transition, as a consumer makes them): each
    is on the stream at once, long before the stream's own check (an hour here), so it is the published change and
    not a periodic re-read that brings it."""
    settings = settings.model_copy(update={"console_live_check_seconds": 3600})
    (job_id,) = await queued_jobs(settings, "alice")
    token = await make_token(settings, "alice", Role.USER, "risk")
    redis = connect_redis(settings)
    store = JobStore(redis, Keys.for_environment(settings.environment), settings.job_ttl_seconds)
    try:
        with api_in_thread(settings, port=0) as url:
            async with console(url) as http:
                await sign_in(http, token)
                async with http.stream("GET", f"/live/jobs/{job_id}") as response:
                    assert response.status_code == 200
                    assert response.headers["content-type"].startswith("text/event-stream")
                    stream = events(response)
                    name, card = await next_event(stream)
                    assert name == "card" and state_of(card) == "queued" and 'data-testid="wait-reason"' in card
                    claim = await store.claim(job_id, "c-1", "default", 30)
                    assert claim.claimed
                    name, card = await next_event(stream, timeout=30)
                    assert name == "card" and state_of(card) == "running", card[:300]
                    assert 'data-testid="attempt-outcome">running<' in card
                    record = await store.get(job_id)
                    assert record is not None
                    summary = _summary(record.job_id)
                    assert await store.mark_succeeded(job_id, "/nonexistent/result.parquet", summary, owner="c-1",
                                                      release="default")
                    name, card = await next_event(stream, timeout=30)
                    assert name == "card" and state_of(card) == "succeeded"
                    assert 'data-testid="spilled_bytes">4096<' in card
                    assert "the result is gone" in card  # the preview says why there are no rows
                    assert await next_event(stream) == ("end", "final")
    finally:
        await redis.aclose()


def _summary(job_id: str):
    from jobqueue.models import PerformanceSummary

    return PerformanceSummary(consumer_id="c-1", spill_enabled=True, spilled_bytes=4096, memory_limit_bytes=1 << 30,
                              peak_memory_bytes=1 << 29, threads=2, rows_in=3, rows_out=3, queue_wait_seconds=0.5,
                              execution_seconds=1.0, total_seconds=1.5,
                              stage_seconds={"plan": 0.1, "execute": 0.8, "write_result": 0.1})


async def test_a_cancel_request_is_on_the_stream_at_once(settings):
    settings = settings.model_copy(update={"console_live_check_seconds": 3600})
    queued, running = await queued_jobs(settings, "alice", "alice")
    token = await make_token(settings, "alice", Role.USER, "risk")
    redis = connect_redis(settings)
    store = JobStore(redis, Keys.for_environment(settings.environment), settings.job_ttl_seconds)
    try:
        assert (await store.claim(running, "c-1", "default", 30)).claimed
        with api_in_thread(settings, port=0) as url:
            async with console(url) as http:
                await sign_in(http, token)
                async with http.stream("GET", f"/live/jobs/{queued}") as a, \
                        http.stream("GET", f"/live/jobs/{running}") as b:
                    on_a, on_b = events(a), events(b)
                    assert state_of((await next_event(on_a))[1]) == "queued"
                    assert "cancel requested" not in (await next_event(on_b))[1]
                    await store.request_cancel(queued)
                    await store.request_cancel(running)
                    name, card = await next_event(on_a, timeout=30)
                    assert name == "card" and state_of(card) == "cancelled"
                    assert await next_event(on_a) == ("end", "final")
                    name, card = await next_event(on_b, timeout=30)
                    assert name == "card" and state_of(card) == "running" and "cancel requested" in card
    finally:
        await redis.aclose()


async def test_attempts_are_on_the_timeline_with_their_start_end_and_error(settings, served):
    (job_id,) = await queued_jobs(settings, "alice")
    token = await make_token(settings, "alice", Role.USER, "risk")
    redis = connect_redis(settings)
    store = JobStore(redis, Keys.for_environment(settings.environment), settings.job_ttl_seconds)
    try:
        assert (await store.claim(job_id, "c-1", "default", 30)).claimed
        assert await store.requeue(job_id, ["attempt 1: consumer c-1 was lost"], owner="c-1", release="default")
        assert (await store.claim(job_id, "c-2", "default", 30)).claimed
        assert await store.mark_failed(job_id, "attempt 2: boom", ["attempt 1: consumer c-1 was lost",
                                                                     "attempt 2: boom"], owner="c-2", release="default")
        record = await store.get(job_id)
        assert record is not None and record.status is JobStatus.FAILED
        assert len(record.attempt_starts) == 2 and len(record.attempt_ends) == 2
        assert record.attempt_starts[0] <= record.attempt_ends[0] <= record.attempt_starts[1] <= record.attempt_ends[1]
        assert record.attempt_ends[1] == record.finished_at
        (queued,) = await queued_jobs(settings, "alice")
        assert await store.mark_cancelled(queued)  # never claimed: no attempt ended
        cancelled = await store.get(queued)
        assert cancelled is not None and cancelled.attempt_starts == cancelled.attempt_ends == []
    finally:
        await redis.aclose()
    async with console(served) as http:
        await sign_in(http, token)
        page = (await http.get(f"/jobs/{job_id}")).text
        api = (await http.get(f"/v1/jobs/{job_id}/summary", headers={"Authorization": f"Bearer {token}"})).json()
    assert len(api["attempt_starts"]) == len(api["attempt_ends"]) == 2
    steps = re.findall(r'data-step="([a-z]+)"', page)
    assert steps == ["submitted", "queued", "attempt", "attempt", "final"], steps
    assert re.findall(r'data-testid="attempt-outcome">([a-z]+)<', page) == ["requeued", "failed"]
    assert re.findall(r'data-testid="attempt-error">([^<]+)<', page) == ["attempt 1: consumer c-1 was lost",
                                                                           "attempt 2: boom"]


async def test_a_user_can_neither_open_nor_stream_another_owners_job_and_errors_are_pages(settings, served):
    alice_job, bob_job = await queued_jobs(settings, "alice", "bob")
    alice = await make_token(settings, "alice", Role.USER, "risk")
    async with console(served) as http:
        await sign_in(http, alice)
        for path in (f"/jobs/{bob_job}", f"/live/jobs/{bob_job}", "/jobs/no-such-job", "/live/jobs/no-such-job"):
            answer = await http.get(path)
            assert answer.status_code == 404, path
            assert answer.headers["content-type"].startswith("text/html") and "Cannot show this page" in answer.text
            assert bob_job not in answer.text or "no job" in answer.text
        unknown = await http.get("/no/such/page")
        assert unknown.status_code == 404 and "<html" in unknown.text and "no such page" in unknown.text
        wrong = await http.post(f"/jobs/{alice_job}")
        assert wrong.status_code == 405 and "<html" in wrong.text
        bad = await http.get("/jobs?cursor=%00")
        assert bad.status_code == 422 and "<html" in bad.text and "cursor" in bad.text
        api = await http.get(f"/v1/jobs/{bob_job}", headers={"Authorization": f"Bearer {alice}"})
        assert api.status_code == 404 and api.headers["content-type"] == "application/json"  # the API keeps JSON
        assert (await http.get("/v1/no-such")).headers["content-type"] == "application/json"


async def test_live_streams_are_capped_per_sign_in_and_end_when_the_token_is_revoked(settings):
    settings = settings.model_copy(update={"console_live_streams_per_session": 2, "console_live_check_seconds": 0.3})
    (job_id,) = await queued_jobs(settings, "alice")
    token = await make_token(settings, "alice", Role.USER, "risk")
    with api_in_thread(settings, port=0) as url:
        async with console(url) as http, console(url) as other:
            await sign_in(http, token)
            await sign_in(other, token)  # another sign-in has its own streams
            async with http.stream("GET", f"/live/jobs/{job_id}") as one, \
                    http.stream("GET", f"/live/jobs/{job_id}") as two:
                assert one.status_code == two.status_code == 200
                third = await http.get(f"/live/jobs/{job_id}")
                assert third.status_code == 429 and "JOBQUEUE_CONSOLE_LIVE_STREAMS_PER_SESSION" in third.text
                async with other.stream("GET", f"/live/jobs/{job_id}") as theirs:
                    assert theirs.status_code == 200
            key = Keys.for_environment(settings.environment).console_live(cookie_digest(http.cookies[COOKIE]))
            redis = connect_redis(settings)
            try:  # a closed stream stops counting once the server sees the browser go
                async def none_open() -> bool:
                    return await redis.zcard(key) == 0

                await eventually(none_open, timeout=30, what="the closed streams to stop counting")
            finally:
                await redis.aclose()
            async with http.stream("GET", f"/live/jobs/{job_id}") as again:
                assert again.status_code == 200
                stream = events(again)
                assert (await next_event(stream))[0] == "card"
                redis = connect_redis(settings)
                try:
                    await TokenStore(redis, Keys.for_environment(settings.environment)).revoke(token[3:15])
                finally:
                    await redis.aclose()
                assert await next_event(stream, timeout=30) == ("end", "signed-out")
            gone = await http.get(f"/live/jobs/{job_id}")
            assert gone.status_code == 303 and gone.headers["location"].startswith("/signin")


async def test_a_spilling_jobs_page_shows_its_card_50_rows_and_the_logs_state(settings, big_store, tmp_path):
    settings = with_groups(settings, tmp_path, {"tight": {"max_instances": 1}}, registry_path=big_store.registry_path,
                           container_memory_bytes=320 * 2**20, query_memory_limit_percent=30)
    ids, times = sample_input(big_store.users, 300_000, seed=9)
    async with AsyncJobQueueClient(settings) as client:
        job = await client.offline_query(ids, OUTPUT, times, owner="alice", team="risk", query_name="churn.big",
                                         tags={"ticket": "T-1"}, correlation_id="corr-42",
                                         resources=ResourceRequests(resource_group="tight"))
        async with worker_running(settings, "tight"):
            record = await job.wait(timeout=300)
    assert record.status is JobStatus.SUCCEEDED and record.summary is not None and record.result_uri
    summary = record.summary
    assert summary.spilled_bytes > 0
    token = await make_token(settings, "alice", Role.USER, "risk")
    with api_in_thread(settings, port=0) as url:
        async with console(url) as http:
            await sign_in(http, token)
            page = (await http.get(f"/jobs/{job.id}")).text
            assert "Logs not reachable" in page  # no `jobqueue up` logs folder in this home
            took = []
            for _ in range(20):  # the page with its 50-row preview, round trips on this (loaded) machine
                start = time.perf_counter()
                assert (await http.get(f"/jobs/{job.id}")).status_code == 200
                took.append(time.perf_counter() - start)
            print(f"job page with a preview: p50 {statistics.median(took) * 1000:.1f} ms, "
                  f"max {max(took) * 1000:.1f} ms over {len(took)} loads")
            log_dir = settings.home / "logs"
            log_dir.mkdir(parents=True)
            line = {"timestamp": "2026-01-01T00:00:00Z", "level": "info", "event": "query done", "job_id": job.id}
            (log_dir / "tight-1.log").write_text(json.dumps(line) + "\n" + json.dumps({**line, "job_id": "x"}) + "\n")
            with_logs = (await http.get(f"/jobs/{job.id}")).text
    assert re.search(r'data-testid="spilled_bytes">(\d+)<', page).group(1) == str(summary.spilled_bytes)
    assert 'data-testid="spill_enabled">true<' in page
    for text in ("churn.big", "corr-42", "ticket=T-1", "300,000", ", ".join(OUTPUT), f'data-copy="{job.id}"'):
        assert text in page, text
    table = page[page.index('data-testid="preview"'):]
    table = table[:table.index("</table>")]
    assert table.count("<tr>") == 51  # the header and 50 rows
    assert "of 300,000 rows" in page and f'href="/jobs/{job.id}/result"' in page
    assert "query done" in with_logs and "Logs not reachable" not in with_logs


def _big_result(path: Path, rows: int) -> None:
    rng = np.random.default_rng(1)
    table = pa.table({"user.id": np.arange(rows), "user.f0": rng.random(rows), "user.f1": rng.random(rows),
                      "user.segment": pa.array([f"segment-{i % 97}" for i in range(rows)])})
    pq.write_table(table, path, row_group_size=122_880, compression="zstd")  # DuckDB's default row group size


async def test_the_preview_reads_the_first_row_group_not_the_whole_file_local_and_s3(s3_settings, tmp_path):
    local = tmp_path / "result.parquet"
    _big_result(local, 1_000_000)
    storage = Storage(s3_settings)
    uri = s3_settings.results_uri + "/big/result.parquet"
    copy = tmp_path / "upload.parquet"
    copy.write_bytes(local.read_bytes())
    await asyncio.to_thread(storage.upload_file, copy, uri)  # moves the file up
    for where in (str(local), uri):
        preview = await asyncio.to_thread(read_preview, storage, where, 50)
        assert len(preview.rows) == 50 and preview.total_rows == 1_000_000 and preview.rows[0][0] == "0"
        assert preview.columns == ["user.id", "user.f0", "user.f1", "user.segment"]
        print(f"preview of {where}: read {preview.bytes_read} of {preview.file_bytes} bytes "
              f"({preview.bytes_read / preview.file_bytes:.1%})")
        assert preview.bytes_read < preview.file_bytes / 5, (preview.bytes_read, preview.file_bytes)
