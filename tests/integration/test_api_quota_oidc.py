"""The API with the quota and OIDC parts plugged in: over a quota, 429 with the quota's numbers (the SDK over HTTP
raises `QuotaExceededError` with them) and nothing staged; a JWT of the configured issuer is a caller like a
`jq_` token, and a JWT the API cannot accept is a 401 naming why."""

from __future__ import annotations

import httpx
import pyarrow as pa
import pytest

from jobqueue import AsyncJobQueueClient, QuotaExceededError
from jobqueue.api.server import api_in_thread
from jobqueue.auth.identity import Role
from tests.api_support import http_settings, make_token
from tests.integration.test_oidc import AUDIENCE, IdentityProvider, idp  # noqa: F401 (the fixture)
from tests.integration.test_quotas import staged
from tests.integration.test_sdk_http import TIMES


def ipc_body() -> bytes:
    table = pa.table({"user.id": [1, 2]})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue())


async def test_over_quota_is_429_with_its_numbers_and_nothing_is_staged(settings):
    settings = settings.model_copy(update={"quota_max_queued_per_owner": 1})
    token = await make_token(settings, "alice", Role.USER, "risk")
    with api_in_thread(settings, port=0) as url:
        async with AsyncJobQueueClient(http_settings(settings, url, token)) as remote, \
                AsyncJobQueueClient(settings) as direct:
            first = await remote.offline_query({"user.id": [1, 2, 3]}, ["user.f0"], TIMES)
            assert staged(direct) == {first.id}
            with pytest.raises(QuotaExceededError) as over:
                await remote.offline_query({"user.id": [1]}, ["user.f0"], TIMES[:1])
            assert (over.value.quota, over.value.subject, over.value.limit, over.value.current) == (
                "max_queued_per_owner", "alice", 1, 1)
            assert "max_queued_per_owner" in str(over.value)
            assert staged(direct) == {first.id}  # the refused query staged nothing
            assert (await remote.get_job(first.id)).owner == "alice"
        answer = httpx.post(f"{url}/v1/jobs", params={"output": "user.f0"}, content=ipc_body(),
                            headers={"Authorization": f"Bearer {token}",
                                     "Content-Type": "application/vnd.apache.arrow.stream"})
        assert answer.status_code == 429, answer.text
        assert answer.json()["reason"] == "quota" and answer.json()["quota"] == {
            "quota": "max_queued_per_owner", "subject": "alice", "limit": 1, "current": 1}


async def test_a_jwt_of_the_issuer_is_a_caller_and_a_bad_one_is_401_naming_why(settings, idp):  # noqa: F811
    settings = settings.model_copy(update={"oidc_issuer": idp.issuer, "oidc_audience": AUDIENCE})
    with api_in_thread(settings, port=0) as url:
        good = idp.token(preferred_username="carol", team="risk", jobqueue_role="operator")
        async with httpx.AsyncClient(base_url=url) as http:
            answer = await http.get("/v1/jobs", headers={"Authorization": f"Bearer {good}"})
            assert answer.status_code == 200, answer.text
            metrics = await http.get("/metrics", headers={"Authorization": f"Bearer {good}"})
            assert metrics.status_code == 200, "an operator's JWT reads the metrics"
            expired = idp.token(exp=1_000_000_000)
            answer = await http.get("/v1/jobs", headers={"Authorization": f"Bearer {expired}"})
            assert answer.status_code == 401 and answer.json()["reason"] == "expired", answer.text
            assert 'error_description="expired"' in answer.headers["WWW-Authenticate"]
            other = IdentityProvider()
            other.add_key("k1")
            try:
                forged = other.token()  # the same kid, another issuer's key
            finally:
                other.close()
            answer = await http.get("/v1/jobs", headers={"Authorization": f"Bearer {forged}"})
            assert answer.status_code == 401 and answer.json()["reason"] in ("wrong_issuer", "bad_signature")
        async with AsyncJobQueueClient(http_settings(settings, url, good)) as remote:
            job = await remote.offline_query({"user.id": [1, 2]}, ["user.f0"], TIMES[:2])
            assert ((await remote.get_job(job.id)).owner, (await remote.get_job(job.id)).team) == ("carol", "risk")
