"""Schemathesis against the OpenAPI document the API serves (a real uvicorn on a free port): for every operation,
generated requests never get a 500 and every response matches its documented schema, status and headers; then
the stateful phase follows the document's links. Schemathesis 4.32 starts its stateful runs only from operations it
rates as reliable roots: here GET /v1/schedules (-> run, pause, resume) and the cancel of a job, not the job list
or submit, so the links list/submit -> get, summary, result, cancel are declared but not walked here (the auth
matrix and test_api drive those routes with real job ids)."""

from __future__ import annotations

import asyncio

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from jobqueue import AsyncJobQueueClient
from jobqueue.api.server import api_in_thread
from jobqueue.auth.identity import Role
from jobqueue.keys import Keys
from jobqueue.redis import connect_redis
from jobqueue.schedules import ScheduledQuery
from tests.api_support import bearer, make_token

# a query input is bytes that no schema can tell apart from an Arrow stream or a Parquet file: sent as generated
schemathesis.serializer.alias(["application/vnd.apache.arrow.stream", "application/vnd.apache.parquet"],
                              "application/octet-stream")
EXAMPLES = hypothesis_settings(max_examples=30, deadline=None, derandomize=True,
                               suppress_health_check=list(HealthCheck))


async def _seed(settings) -> str:
    """An operator token, and what the links lead to: jobs (queued and cancelled) and a published schedule."""
    async with AsyncJobQueueClient(settings) as client:
        for i in range(3):
            job = await client.offline_query({"user.id": [i + 1]}, ["user.f0"], owner="olga", team="platform")
        await client.cancel(job.id)
    redis = connect_redis(settings)
    sq = ScheduledQuery(name="nightly", schedule="0 2 * * *", output=["user.f0"], input={"user.id": [1]})
    await redis.hset(Keys.for_environment(settings.environment).schedules, "nightly", sq.model_dump_json())
    await redis.aclose()
    return await make_token(settings, "olga", Role.OPERATOR, "platform")


@pytest.fixture
def served_schema(settings):
    token = asyncio.run(_seed(settings))
    with api_in_thread(settings, port=0) as url:
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
        yield schema, bearer(token)


def _excluded(case) -> list:
    # a submit whose generated `output` names no registry feature, or whose generated body is no Arrow/Parquet,
    # is rightly 422: the schema cannot say which strings are features of the registry
    return [positive_data_acceptance] if case.operation.method.upper() == "POST" and \
        case.operation.path == "/v1/jobs" else []


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_operation_answers_as_documented(served_schema, mode):
    schema, headers = served_schema
    failures = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @EXAMPLES
        @given(case=operation.as_strategy(generation_mode=mode, headers=headers))
        def check(case):
            case.call_and_validate(excluded_checks=_excluded(case))

        try:
            check()
        except Unsatisfiable:  # negative: nothing of it can be made invalid (a path string, no parameters)
            assert mode is GenerationMode.NEGATIVE, operation.path
        except Exception as e:  # every operation's failure, then one assertion naming them all
            failures.append(f"{operation.method.upper()} {operation.path}: {e}")
    assert not failures, "\n\n".join(failures)


def test_stateful_links(served_schema):
    schema, headers = served_schema

    followed: list[int] = []  # statuses of a schedule's run: a 200 there came from a link (a real schedule name)

    class Machine(schema.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case):
            return {"headers": headers}

        def after_call(self, response, case):
            super().after_call(response, case)
            if case.operation.path == "/v1/schedules/{name}/run":
                followed.append(response.status_code)

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            case.validate_response(response, excluded_checks=_excluded(case), transport_kwargs=kwargs or None,
                                   recorder=self.recorder)

    Machine.run(settings=hypothesis_settings(max_examples=30, deadline=None, stateful_step_count=6,
                                             derandomize=True, suppress_health_check=list(HealthCheck)))
    assert 200 in followed, followed
