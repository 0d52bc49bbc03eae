"""The auth matrix of the API: every endpoint x (owner, same team, other team, operator, admin, missing, expired,
revoked token), each allowed and denied pair asserted; a `user` never sees another owner's job, not even in a
listing, and a job it may not see is "not found" (404), never "forbidden"."""

from __future__ import annotations

import httpx
import pytest

from jobqueue import AsyncJobQueueClient
from jobqueue.api.server import api_in_thread
from jobqueue.auth.identity import Role
from jobqueue.keys import Keys
from jobqueue.redis import connect_redis
from jobqueue.registry_versions import document_of
from jobqueue.schedules import ScheduledQuery
from tests.api_support import bearer, make_token

CALLERS = ["owner", "same_team", "other_team", "operator", "admin", "missing", "expired", "revoked"]
REFUSED = {"missing", "expired", "revoked"}
SEES_ALL = {"owner", "operator", "admin"}  # alice's job: her, and the roles that see every job


async def _tokens(settings) -> dict[str, str | None]:
    return {
        "owner": await make_token(settings, "alice", Role.USER, "risk"),
        "same_team": await make_token(settings, "bob", Role.USER, "risk"),
        "other_team": await make_token(settings, "carol", Role.USER, "growth"),
        "operator": await make_token(settings, "olga", Role.OPERATOR, "platform"),
        "admin": await make_token(settings, "adam", Role.ADMIN, "platform"),
        "missing": None,
        "expired": await make_token(settings, "alice", Role.USER, "risk", expired=True),
        "revoked": await make_token(settings, "alice", Role.USER, "risk", revoked=True),
    }


async def _alices_job(client: AsyncJobQueueClient, **kw) -> str:
    job = await client.offline_query({"user.id": [1]}, ["user.f0"], owner="alice", team="risk", **kw)
    return job.id


async def _publish_schedule(settings) -> None:
    redis = connect_redis(settings)
    sq = ScheduledQuery(name="nightly", schedule="0 2 * * *", output=["user.f0"], input={"user.id": [1]})
    await redis.hset(Keys.for_environment(settings.environment).schedules, "nightly", sq.model_dump_json())
    await redis.aclose()


@pytest.mark.parametrize("team_view", [False, True], ids=["own-jobs", "users-see-team-jobs"])
async def test_auth_matrix(settings, team_view):
    settings = settings.model_copy(update={"users_see_team_jobs": team_view})
    tokens = await _tokens(settings)
    await _publish_schedule(settings)
    sees = SEES_ALL | ({"same_team"} if team_view else set())
    async with AsyncJobQueueClient(settings) as client:
        await client.registries.apply(client.registry, applied_by="test")  # version 1, as `jobqueue up` does
        job = await _alices_job(client, query_name="shared")
        fresh = {who: await _alices_job(client, query_name=f"victim_{who}") for who in CALLERS}
        document = document_of(client.registry)  # already current: an admin's apply stores nothing
    with api_in_thread(settings, port=0) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            for who in CALLERS:
                token = tokens[who]
                h = bearer(token) if token else {}
                calls = {
                    "get": await http.get(f"/v1/jobs/{job}", headers=h),
                    "get_prefix": await http.get(f"/v1/jobs/{job[:12]}", headers=h),
                    "summary": await http.get(f"/v1/jobs/{job}/summary", headers=h),
                    "result": await http.get(f"/v1/jobs/{job}/result", headers=h),
                    "result_url": await http.get(f"/v1/jobs/{job}/result-url", headers=h),
                    "upload": await http.post("/v1/uploads", headers=h, json={"size": 10}),
                    "list": await http.get("/v1/jobs", headers=h, params={"limit": 1000}),
                    "groups": await http.get("/v1/groups", headers=h),
                    "schedules": await http.get("/v1/schedules", headers=h),
                    "schedule_runs": await http.get("/v1/schedules/nightly/runs", headers=h),
                    "schedule_run": await http.post("/v1/schedules/nightly/run", headers=h),
                    "schedule_pause": await http.post("/v1/schedules/nightly/pause", headers=h),
                    "schedule_resume": await http.post("/v1/schedules/nightly/resume", headers=h),
                    "metrics": await http.get("/metrics", headers=h),
                    "cancel_many": await http.post("/v1/jobs/cancel", headers=h,
                                                   json={"query_name": f"victim_{who}"}),
                    "cancel": await http.post(f"/v1/jobs/{fresh[who]}/cancel", headers=h),
                    "registry": await http.get("/v1/registry", headers=h),
                    "registry_history": await http.get("/v1/registry/versions", headers=h),
                    "registry_version": await http.get("/v1/registry/versions/1", headers=h),
                    "registry_apply": await http.post("/v1/registry", headers=h, json=document),
                }
                if who in REFUSED:
                    for name, r in calls.items():
                        assert r.status_code == 401, (who, name, r.text)
                        assert r.json()["reason"] == ("missing" if who == "missing" else who), (who, name)
                        assert r.headers["www-authenticate"].startswith("Bearer"), (who, name)
                    continue
                allowed_job = who in sees
                for name in ("get", "get_prefix", "summary"):
                    assert calls[name].status_code == (200 if allowed_job else 404), (who, name, calls[name].text)
                # allowed: the job is queued, so there is no result yet (409); denied: not found
                for name in ("result", "result_url"):
                    assert calls[name].status_code == (409 if allowed_job else 404), (who, name, calls[name].text)
                # every role may stage an upload; this service stores locally: 409 saying to post the body
                assert calls["upload"].status_code == 409, (who, calls["upload"].text)
                assert calls["upload"].json()["reason"] == "storage_not_s3", who
                listed = {j["job_id"]: j["owner"] for j in calls["list"].json()["jobs"]}
                assert (job in listed) == allowed_job, who
                if who in ("same_team", "other_team"):
                    mine = "bob" if who == "same_team" else "carol"
                    assert set(listed.values()) <= ({mine, "alice"} if allowed_job else {mine}), (who, listed)
                for name in ("groups", "schedules", "schedule_runs", "registry", "registry_history",
                             "registry_version"):
                    assert calls[name].status_code == 200, (who, name)
                is_operator = who in ("operator", "admin")
                for name in ("schedule_run", "schedule_pause", "schedule_resume", "metrics"):
                    assert calls[name].status_code == (200 if is_operator else 403), (who, name, calls[name].text)
                assert calls["registry_apply"].status_code == (200 if who == "admin" else 403), \
                    (who, calls["registry_apply"].text)
                assert calls["cancel_many"].status_code == 200
                assert calls["cancel_many"].json()["cancelled"] == (1 if allowed_job else 0), who
                # the fresh job is cancelled already when cancel_many could; cancelling it again is a no-op
                assert calls["cancel"].status_code == (200 if allowed_job else 404), (who, calls["cancel"].text)
    async with AsyncJobQueueClient(settings) as client:
        for who in CALLERS:
            status = (await client.get_job(fresh[who])).status.value
            assert status == ("cancelled" if who in sees else "queued"), (who, status)

