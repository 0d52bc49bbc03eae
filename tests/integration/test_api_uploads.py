"""Presigned transfers against a real S3 HTTP API (moto's server) and a real uvicorn: `POST /v1/uploads` and a real
PUT with httpx to the presigned URL, `POST /v1/jobs?upload=<ref>`, `GET /v1/jobs/{id}/result-url` and a real GET;
owner enforcement, the size limit, bad and expired references, the garbage collector, local storage's 409, and
the SDK over HTTP choosing the presigned path on its own."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import structlog.testing

from jobqueue import AsyncJobQueueClient, JobStatus
from jobqueue.api.server import api_in_thread
from jobqueue.auth.identity import Role
from jobqueue.errors import QuotaExceededError
from jobqueue.keys import Keys
from jobqueue.redis import connect_redis
from jobqueue.storage import Storage
from jobqueue.upload_store import UploadStore, upload_uri
from manager.gc import GarbageCollector
from tests.api_support import ARROW, PARQUET, arrow_body, bearer, make_token, parquet_body
from tests.helpers import eventually, worker_running
from tests.s3_gateway import presign_checking_gateway

PARQUET_TYPE = PARQUET["content-type"]


async def _finished(http: httpx.AsyncClient, job_id: str) -> dict:
    async def done():
        body = (await http.get(f"/v1/jobs/{job_id}")).json()
        return body if JobStatus(body["status"]).is_final else None
    return await eventually(done, timeout=90, what=f"job {job_id} finished")


async def _ticket(http: httpx.AsyncClient, body: bytes, content_type: str = PARQUET_TYPE,
                  headers: dict[str, str] | None = None) -> dict:
    r = await http.post("/v1/uploads", json={"size": len(body), "content_type": content_type}, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()


async def _put(ticket: dict, body: bytes) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as raw:  # no API token: the URL is the credential
        return await raw.put(ticket["url"], content=body, headers=ticket["headers"])


def _exists(settings, uri: str) -> bool:
    fs, key = Storage(settings).resolve(uri)
    return fs.get_file_info(key).type == pafs.FileType.File


async def _largest_value(settings) -> int:
    """The size of the biggest key of the test's environment in Redis (DUMP length)."""
    redis = connect_redis(settings)
    try:
        pattern = f"jobqueue:{settings.environment}:*"
        sizes = [len(await redis.dump(k) or b"") async for k in redis.scan_iter(match=pattern)]
        return max(sizes, default=0)
    finally:
        await redis.aclose()


async def test_a_presigned_upload_is_submitted_by_reference_and_the_result_read_from_its_url(s3_settings):
    settings = s3_settings.model_copy(update={"api_presign_seconds": 120})
    alice = await make_token(settings, "alice", Role.USER, "risk")
    carol = await make_token(settings, "carol", Role.USER, "growth")
    olga = await make_token(settings, "olga", Role.OPERATOR, "platform")
    inp = pa.table({"user.id": pa.array(range(1, 50_001), pa.int64())})  # 50,000 rows, about 200 KB of Parquet
    body = parquet_body(inp)
    with api_in_thread(settings, port=0) as url:
        async with httpx.AsyncClient(base_url=url, headers=bearer(alice), timeout=60) as http:
            ticket = await _ticket(http, body)
            ref = ticket["upload"]
            expected_uri = upload_uri(settings.staging, settings.environment, "alice", ref)
            bucket_key = expected_uri.removeprefix("s3://")
            parts = urlsplit(ticket["url"])
            assert unquote(parts.path).lstrip("/") == bucket_key  # under alice's own staging prefix
            assert f"/_uploads/alice/{ref}/input" in bucket_key
            query = parse_qs(parts.query)
            assert query["X-Amz-Expires"] == ["120"]
            assert query["X-Amz-SignedHeaders"] == ["content-length;content-type;host"]  # the size is signed
            assert ticket["headers"] == {"Content-Type": PARQUET_TYPE, "Content-Length": str(len(body))}
            put = await _put(ticket, body)
            assert put.status_code == 200, put.text
            assert _exists(settings, expected_uri)

            r = await http.post("/v1/jobs", params={"output": ["user.f0"], "upload": ref})
            assert r.status_code == 201, r.text
            record = r.json()
            assert (record["owner"], record["input_rows"]) == ("alice", 50_000)
            assert not _exists(settings, expected_uri)  # the job has its own staged copy; the upload is gone
            assert await _largest_value(settings) < len(body) // 4  # the input never went through Redis
            again = await http.post("/v1/jobs", params={"output": ["user.f0"], "upload": ref})
            assert again.status_code == 404 and again.json()["field"] == "upload", again.text  # used once only

            async with worker_running(settings):
                final = await _finished(http, record["job_id"])
            assert final["status"] == "succeeded", final
            r = await http.get(f"/v1/jobs/{record['job_id']}/result-url")
            assert r.status_code == 200, r.text
            presigned = r.json()
            assert presigned["job_id"] == record["job_id"] and presigned["size"] > 0
            assert parse_qs(urlsplit(presigned["url"]).query)["X-Amz-Expires"] == ["120"]
            # the result download's policy: another owner's job is not found, an operator's may
            r = await http.get(f"/v1/jobs/{record['job_id']}/result-url", headers=bearer(carol))
            assert r.status_code == 404, r.text
            r = await http.get(f"/v1/jobs/{record['job_id']}/result-url", headers=bearer(olga))
            assert r.status_code == 200, r.text
            async with httpx.AsyncClient(timeout=60) as raw:
                got = await raw.get(presigned["url"])
            assert got.status_code == 200 and len(got.content) == presigned["size"]
            assert f'filename="{record["job_id"]}.parquet"' in got.headers["content-disposition"]
    async with AsyncJobQueueClient(settings) as client:
        direct = await client.job(record["job_id"]).to_arrow()
    assert pq.read_table(io.BytesIO(got.content)).equals(direct)


async def test_a_reference_is_its_owners_only_and_bad_references_are_named(s3_settings):
    settings = s3_settings.model_copy(update={"api_max_upload_bytes": 4096})
    tokens = {who: await make_token(settings, who, role, team) for who, role, team in (
        ("alice", Role.USER, "risk"), ("bob", Role.USER, "risk"), ("carol", Role.USER, "growth"),
        ("olga", Role.OPERATOR, "platform"), ("adam", Role.ADMIN, "platform"))}
    body = arrow_body(pa.table({"user.id": [1, 2, 3]}))
    submit = {"output": ["user.f0"]}
    with api_in_thread(settings, port=0) as url:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            alice = bearer(tokens["alice"])
            ticket = await _ticket(http, body, ARROW["content-type"], alice)
            ref = ticket["upload"]
            # nothing PUT yet: 422 naming the field, and the reference stays usable
            r = await http.post("/v1/jobs", headers=alice, params={**submit, "upload": ref})
            assert r.status_code == 422 and r.json()["field"] == "upload" and "nothing was PUT" in r.text, r.text
            assert (await _put(ticket, body)).status_code == 200
            for who in ("bob", "carol", "olga", "adam"):  # the same team, another team, the operator, the admin
                r = await http.post("/v1/jobs", headers=bearer(tokens[who]), params={**submit, "upload": ref})
                assert r.status_code == 404 and r.json()["field"] == "upload", (who, r.text)
                assert r.json()["reason"] == "upload_not_found", who
            for bad in ("nonsense", "up_" + "g" * 32, "../x"):
                r = await http.post("/v1/jobs", headers=alice, params={**submit, "upload": bad})
                assert r.status_code == 422 and r.json()["field"] == "upload", (bad, r.text)
            r = await http.post("/v1/jobs", headers=alice, params={**submit, "upload": "up_" + "0" * 32})
            assert r.status_code == 404 and r.json()["field"] == "upload", r.text
            r = await http.post("/v1/jobs", headers={**alice, **ARROW}, content=body, params={**submit, "upload": ref})
            assert r.status_code == 422 and r.json()["field"] == "upload" and "not both" in r.text, r.text
            r = await http.post("/v1/jobs", headers=alice, params={"output": ["user.nope"], "upload": ref})
            assert r.status_code == 422 and r.json()["field"] == "output[0]", r.text  # the SDK's check, as a body's
            # the size limit: refused before signing, and a bigger object than declared is refused at submit
            r = await http.post("/v1/uploads", headers=alice, json={"size": 4097})
            assert r.status_code == 413 and r.json()["field"] == "size", r.text
            for size in (0, -1, "x"):
                r = await http.post("/v1/uploads", headers=alice, json={"size": size})
                assert r.status_code == 422 and r.json()["field"] == "size", r.text
            big = await _ticket(http, body, ARROW["content-type"], alice)
            async with httpx.AsyncClient(timeout=30) as raw:  # moto checks no signature: S3 would refuse this PUT
                assert (await raw.put(big["url"], content=b"x" * 5000)).status_code == 200
            r = await http.post("/v1/jobs", headers=alice, params={**submit, "upload": big["upload"]})
            assert r.status_code == 413 and r.json()["reason"] == "upload_too_large", r.text
            garbage = await _ticket(http, b"garbage!", ARROW["content-type"], alice)
            assert (await _put(garbage, b"garbage!")).status_code == 200
            r = await http.post("/v1/jobs", headers=alice, params={**submit, "upload": garbage["upload"]})
            assert r.status_code == 422 and r.json()["field"] == "input", r.text  # as a body that does not decode
            # after every refusal, alice's reference still works, once
            r = await http.post("/v1/jobs", headers=alice, params={**submit, "upload": ref})
            assert r.status_code == 201 and r.json()["input_rows"] == 3, r.text


async def test_an_owner_holds_at_most_the_quota_of_references_and_a_submit_or_expiry_frees_one(s3_settings):
    """Each reference may stage up to JOBQUEUE_API_MAX_UPLOAD_BYTES until it expires: past
    JOBQUEUE_QUOTA_MAX_PENDING_UPLOADS_PER_OWNER held at once, `POST /v1/uploads` is a 429 naming the quota and its
    numbers, and nothing is stored; a submitted reference frees its place, one given back by a refused submit keeps
    it, an expired one frees it."""
    settings = s3_settings.model_copy(update={"quota_max_pending_uploads_per_owner": 2})
    alice, bob = [bearer(await make_token(settings, who, Role.USER, "risk")) for who in ("alice", "bob")]
    body = arrow_body(pa.table({"user.id": [1, 2, 3]}))
    keys = Keys.for_environment(settings.environment)
    redis = connect_redis(settings)
    try:
        with api_in_thread(settings, port=0) as url:
            async with httpx.AsyncClient(base_url=url, timeout=60) as http:
                first = await _ticket(http, body, ARROW["content-type"], alice)
                await _ticket(http, body, ARROW["content-type"], alice)
                records_before = [k async for k in redis.scan_iter(match=keys.upload("*"))]
                over = await http.post("/v1/uploads", headers=alice,
                                       json={"size": len(body), "content_type": ARROW["content-type"]})
                assert over.status_code == 429, over.text
                assert over.json()["quota"] == {"quota": "max_pending_uploads_per_owner", "subject": "alice",
                                                "limit": 2, "current": 2}
                assert "JOBQUEUE_QUOTA_MAX_PENDING_UPLOADS_PER_OWNER=2" in over.json()["detail"]
                assert [k async for k in redis.scan_iter(match=keys.upload("*"))] == records_before
                await _ticket(http, body, ARROW["content-type"], bob)  # another owner's are his own

                assert (await _put(first, body)).status_code == 200
                refused = await http.post("/v1/jobs", headers=alice,
                                          params={"output": ["user.nope"], "upload": first["upload"]})
                assert refused.status_code == 422, refused.text  # given back: it still holds its place
                assert (await http.post("/v1/uploads", headers=alice, json={"size": len(body)})).status_code == 429
                done = await http.post("/v1/jobs", headers=alice, params={"output": ["user.f0"],
                                                                          "upload": first["upload"]})
                assert done.status_code == 201, done.text
                await _ticket(http, body, ARROW["content-type"], alice)  # the submitted one's place
                assert (await http.post("/v1/uploads", headers=alice, json={"size": len(body)})).status_code == 429

        # an expired reference frees its place (here after 1 s)
        store = UploadStore(redis, keys, settings.staging, settings.environment, ttl_seconds=1, max_per_owner=1)
        await store.create("dora", "risk", 10, PARQUET_TYPE)
        with pytest.raises(QuotaExceededError) as refused_one:
            await store.create("dora", "risk", 10, PARQUET_TYPE)
        assert (refused_one.value.quota, refused_one.value.limit, refused_one.value.current) == \
            ("max_pending_uploads_per_owner", 1, 1)

        async def creates() -> bool:
            try:
                await store.create("dora", "risk", 10, PARQUET_TYPE)
            except QuotaExceededError:
                return False
            return True

        await eventually(creates, timeout=10, what="dora's first reference to expire")
    finally:
        await redis.aclose()


async def test_an_unused_reference_expires_and_the_gc_removes_its_object(s3_settings):
    settings = s3_settings.model_copy(update={"api_upload_ttl_seconds": 2, "api_presign_seconds": 900,
                                              "gc_grace_seconds": 0})
    alice = await make_token(settings, "alice", Role.USER, "risk")
    body = arrow_body(pa.table({"user.id": [1]}))
    keys = Keys.for_environment(settings.environment)
    redis = connect_redis(settings)
    try:
        with api_in_thread(settings, port=0) as url:
            async with httpx.AsyncClient(base_url=url, headers=bearer(alice), timeout=60) as http:
                expiring = await _ticket(http, body, ARROW["content-type"])
                assert int(parse_qs(urlsplit(expiring["url"]).query)["X-Amz-Expires"][0]) <= 2  # not past the ref
                expires_at = datetime.fromisoformat(expiring["expires_at"])
                assert 0 < (expires_at - datetime.now(UTC)).total_seconds() <= 2
                assert (await _put(expiring, body)).status_code == 200

                async def expired() -> bool:
                    return await redis.exists(keys.upload(expiring["upload"])) == 0

                await eventually(expired, timeout=30, what="the upload reference expired")
                r = await http.post("/v1/jobs", params={"output": ["user.f0"], "upload": expiring["upload"]})
                assert r.status_code == 404 and r.json()["field"] == "upload", r.text
                assert "expired" in r.json()["detail"]
                live_settings = settings.model_copy(update={"api_upload_ttl_seconds": 3600})
        with api_in_thread(live_settings, port=0) as url:
            async with httpx.AsyncClient(base_url=url, headers=bearer(alice), timeout=60) as http:
                live = await _ticket(http, body, ARROW["content-type"])
                assert (await _put(live, body)).status_code == 200
        report = await GarbageCollector(redis, settings).run_once()
        assert report.removed["staged_upload"] == [expiring["upload"]]
        assert not _exists(settings, upload_uri(settings.staging, settings.environment, "alice", expiring["upload"]))
        assert _exists(settings, upload_uri(settings.staging, settings.environment, "alice", live["upload"]))
    finally:
        await redis.aclose()


async def test_with_local_storage_uploads_and_result_urls_say_what_to_do_instead(settings):
    alice = await make_token(settings, "alice", Role.USER, "risk")
    with api_in_thread(settings, port=0) as url:
        async with httpx.AsyncClient(base_url=url, headers=bearer(alice), timeout=60) as http:
            r = await http.post("/v1/uploads", json={"size": 10})
            assert r.status_code == 409 and r.json()["reason"] == "storage_not_s3", r.text
            assert "post the input as the body of POST /v1/jobs" in r.json()["detail"]
            job = (await http.post("/v1/jobs", content=arrow_body(pa.table({"user.id": [1]})), headers=ARROW,
                                   params={"output": ["user.f0"]})).json()
            async with worker_running(settings):
                assert (await _finished(http, job["job_id"]))["status"] == "succeeded"
            r = await http.get(f"/v1/jobs/{job['job_id']}/result-url")
            assert r.status_code == 409 and r.json()["reason"] == "storage_not_s3", r.text
            assert f"download GET /v1/jobs/{job['job_id']}/result instead" in r.json()["detail"]


@pytest.mark.parametrize("storage", ["s3", "local"])
async def test_the_sdk_over_http_stages_big_inputs_and_reads_results_through_presigned_urls(
        settings, s3_settings, storage):
    served = (s3_settings if storage == "s3" else settings).model_copy(update={"upload_threshold_bytes": 1024})
    token = await make_token(served, "alice", Role.USER, "risk")
    small, big = {"user.id": [1, 2]}, {"user.id": list(range(1, 2001))}
    with api_in_thread(served, port=0) as url, structlog.testing.capture_logs() as logs:
        async with AsyncJobQueueClient(served, api_url=url, token=token) as client:
            small_job = await client.offline_query(small, ["user.f0"])
            big_job = await client.offline_query(big, ["user.f0"])
            async with worker_running(served, max_jobs=2):
                await big_job.wait(timeout=90)
                await small_job.wait(timeout=90)
            got = await big_job.to_arrow()
            offered = client.backend.presigned.offered
    submits = [e for e in logs if e["event"] == "api audit" and e["action"] == "jobs:submit"]
    steps = [(e.get("step"), e.get("upload") is not None) for e in submits]
    if storage == "s3":  # the small input in the body; the big one PUT, then submitted by reference
        assert steps == [(None, False), ("upload", True), (None, True)], steps
        assert offered is True
    else:  # asked once, told 409: the body from then on, and the result streamed
        assert steps == [(None, False), (None, False)], steps
        assert offered is False
    async with AsyncJobQueueClient(served) as direct:
        assert got.equals(await direct.job(big_job.id).to_arrow())
        assert got.num_rows == 2000


async def test_presigned_urls_are_signed_as_s3_checks_them_and_expire(s3_settings, s3_endpoint):
    """moto takes any presigned request; a gateway that checks them as S3 does (tests/s3_gateway.py) shows that the
    URLs are rightly signed, bind the declared size and type, and stop working when they expire."""
    alice = await make_token(s3_settings, "alice", Role.USER, "risk")
    inp = pa.table({"user.id": [2, 1, 3]})
    body = arrow_body(inp)
    arrow = ARROW["content-type"]
    with presign_checking_gateway(s3_endpoint, secret="test") as gateway:
        with api_in_thread(s3_settings, port=0) as url:
            async with httpx.AsyncClient(base_url=url, headers=bearer(alice), timeout=60) as http, \
                    httpx.AsyncClient(timeout=60) as raw:
                ticket = await _ticket(http, body, arrow)
                put_url = gateway.route(ticket["url"])
                r = await raw.put(put_url, content=body + b"x", headers={"Content-Type": arrow})  # another size
                assert r.status_code == 403 and "SignatureDoesNotMatch" in r.text, r.text
                r = await raw.put(put_url, content=body, headers={**ticket["headers"], "Content-Type": PARQUET_TYPE})
                assert r.status_code == 403 and "SignatureDoesNotMatch" in r.text, r.text
                other = put_url.replace(f"/{ticket['upload']}/", f"/up_{'0' * 32}/")  # another key: not signed
                r = await raw.put(other, content=body, headers=ticket["headers"])
                assert r.status_code == 403 and "SignatureDoesNotMatch" in r.text, r.text
                r = await raw.put(put_url, content=body, headers=ticket["headers"])
                assert r.status_code == 200, (r.text, gateway.refused)
                job = await http.post("/v1/jobs", params={"output": ["user.f0"], "upload": ticket["upload"]})
                assert job.status_code == 201, job.text
                async with worker_running(s3_settings):
                    assert (await _finished(http, job.json()["job_id"]))["status"] == "succeeded"
                presigned = (await http.get(f"/v1/jobs/{job.json()['job_id']}/result-url")).json()
                got = await raw.get(gateway.route(presigned["url"]))
                assert got.status_code == 200, (got.text, gateway.refused)
                assert pq.read_table(io.BytesIO(got.content)).num_rows == 3
        brief = s3_settings.model_copy(update={"api_presign_seconds": 1})
        with api_in_thread(brief, port=0) as url:
            async with httpx.AsyncClient(base_url=url, headers=bearer(alice), timeout=60) as http, \
                    httpx.AsyncClient(timeout=60) as raw:
                ticket = await _ticket(http, body, arrow)
                until = datetime.fromisoformat(ticket["url_expires_at"]) + timedelta(seconds=1)
                await eventually(lambda: datetime.now(UTC) > until, timeout=30, what="the URL's expiry passed")
                r = await raw.put(gateway.route(ticket["url"]), content=body, headers=ticket["headers"])
                assert r.status_code == 403 and "Request has expired" in r.text, r.text


async def test_the_sdk_falls_back_to_the_api_when_the_object_store_is_out_of_its_reach(s3_settings):
    served = s3_settings.model_copy(update={"upload_threshold_bytes": 1024})
    token = await make_token(served, "alice", Role.USER, "risk")
    big = {"user.id": list(range(1, 2001))}
    with api_in_thread(served, port=0) as url, structlog.testing.capture_logs() as logs:
        async with AsyncJobQueueClient(served, api_url=url, token=token) as client:
            presigned = client.backend.presigned
            # the store's address does not answer from here (an in-cluster name)
            presigned._client = httpx.AsyncClient(proxy="http://127.0.0.1:9", timeout=10)
            job = await client.offline_query(big, ["user.f0"])
            async with worker_running(served):
                await job.wait(timeout=90)
            got = await job.to_arrow()
            assert presigned.offered is False
    submits = [(e.get("step"), e.get("upload")) for e in logs if e["event"] == "api audit"]
    assert [step for step, _ in submits] == ["upload", None] and submits[1][1] is None, submits  # then the body
    assert any("cannot reach the object store" in e["event"] for e in logs), [e["event"] for e in logs]
    assert got.num_rows == 2000
