"""Times in the API are ISO 8601 text, as its schema says: a number (which pydantic would take as Unix seconds) is
a 422 naming the field. Found by schemathesis' negative phase: `GET /v1/jobs?submitted_after=-22082617` was 200."""

from __future__ import annotations

import httpx

from jobqueue.api.server import api_in_thread
from jobqueue.auth.identity import Role
from tests.api_support import bearer, make_token


async def test_a_number_where_a_time_goes_is_422_naming_the_field(settings):
    token = await make_token(settings, "olga", Role.OPERATOR, "platform")
    with api_in_thread(settings, port=0) as url:
        async with httpx.AsyncClient(base_url=url, headers=bearer(token)) as http:
            for params in ({"submitted_after": "-22082617"}, {"submitted_before": "1700000000.5"}):
                answer = await http.get("/v1/jobs", params=params)
                (name,) = params
                assert answer.status_code == 422 and answer.json()["field"] == name, answer.text
                assert "ISO 8601" in answer.json()["detail"], answer.text
            answer = await http.post("/v1/jobs/cancel", json={"submitted_after": 1700000000})
            assert answer.status_code == 422 and "ISO 8601" in answer.text, answer.text
            answer = await http.get("/v1/jobs", params={"submitted_after": "2026-12-01T00:00:00Z"})
            assert answer.status_code == 200, answer.text
