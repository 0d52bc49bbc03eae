"""Schemathesis against the OpenAPI document the API serves (a real uvicorn on a free port): for every operation,
generated requests never get a 500 and every response matches its documented schema, status and headers; then
the stateful phase follows the document's links. Schemathesis 4.32 starts its stateful runs only from operations it
rates as reliable roots: GET /v1/schedules (-> run, pause, resume, runs) and the cancel of a job, never submit (its
body is binary: nothing generated is an Arrow stream) nor the job list. So the job links (submit -> get, summary,
result, cancel) get a state machine of their own whose root submits a real Arrow body, with a consumer running:
every other submission goes to a group without consumers and stays queued (cancel 200, result 409), the others are
waited for until they succeeded (result 200, cancel 409); the test counts the calls each link made."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
from collections import Counter
from collections.abc import Iterator

import httpx
import pyarrow as pa
import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from hypothesis.stateful import Bundle
from schemathesis import GenerationMode
from schemathesis.generation.stateful.state_machine import StepInput, StepOutput
from schemathesis.specs.openapi.checks import positive_data_acceptance
from schemathesis.specs.openapi.stateful import is_root_allowed, transition

from jobqueue import AsyncJobQueueClient
from jobqueue.api.server import api_in_thread
from jobqueue.auth.identity import Role
from jobqueue.keys import Keys
from jobqueue.redis import connect_redis
from jobqueue.schedules import ScheduledQuery
from jobqueue.settings import Settings
from tests.api_support import arrow_body, bearer, make_token
from tests.helpers import with_groups, worker_running

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


class CountingMachine:
    """What both state machines add to schemathesis': the caller's token, the checks of `_excluded`, and a count of
    every step by (`<source operation> -> <link>` when a link gave its parameters, else the operation; status)."""

    headers: dict[str, str]
    calls: Counter[tuple[str, int]]
    links: dict[str, str]  # target operation -> link name (the document's)

    def get_call_kwargs(self, case):
        return {"headers": self.headers}

    def step(self, input: StepInput) -> StepOutput:
        output = super().step(input)  # type: ignore[misc]
        label = input.case.operation.label
        if input.transition is not None and input.is_applied:
            parent = self.recorder.cases[input.transition.parent_id].value.operation.label  # type: ignore[attr-defined]
            label = f"{parent} -> {self.links.get(label, label)}"
        self.calls[(label, output.response.status_code)] += 1
        return output

    def validate_response(self, response, case, additional_checks=None, **kwargs):
        case.validate_response(response, excluded_checks=_excluded(case), transport_kwargs=kwargs or None,
                               recorder=self.recorder)  # type: ignore[attr-defined]


def _followed(calls: Counter[tuple[str, int]], source: str, link: str) -> set[int]:
    return {status for (label, status) in calls if label == f"{source} -> {link}"}


SCHEDULES = "GET /v1/schedules"
SCHEDULE_LINKS = {"POST /v1/schedules/{name}/run": "RunSchedule", "POST /v1/schedules/{name}/pause": "PauseSchedule",
                  "POST /v1/schedules/{name}/resume": "ResumeSchedule",
                  "GET /v1/schedules/{name}/runs": "RunsOfSchedule"}


def test_stateful_links(served_schema):
    """The schedule links, walked from the list: each target called with the published schedule's name."""
    schema, headers = served_schema
    calls: Counter[tuple[str, int]] = Counter()

    class Machine(CountingMachine, schema.as_state_machine()):  # type: ignore[misc]
        pass

    Machine.headers, Machine.calls, Machine.links = headers, calls, SCHEDULE_LINKS
    Machine.run(settings=hypothesis_settings(max_examples=30, deadline=None, stateful_step_count=6,
                                             derandomize=True, suppress_health_check=list(HealthCheck)))
    walked = {link: _followed(calls, SCHEDULES, link) for link in SCHEDULE_LINKS.values()}
    assert any(200 in statuses for statuses in walked.values()), sorted(calls.items())
    for link, statuses in walked.items():  # a link's name is a real schedule's: never 404
        assert 404 not in statuses, (link, sorted(calls.items()))


SUBMIT = "POST /v1/jobs"
JOB_LINKS = {"GET /v1/jobs/{job_id}": "GetJob", "GET /v1/jobs/{job_id}/summary": "GetSummary",
             "GET /v1/jobs/{job_id}/result": "GetResult", "POST /v1/jobs/{job_id}/cancel": "CancelJob"}


@contextlib.contextmanager
def consumer_in_thread(settings: Settings) -> Iterator[None]:
    """A real consumer of the `default` group on an event loop of its own, while the block runs."""
    loop = asyncio.new_event_loop()
    started, stop = threading.Event(), asyncio.Event()

    async def serve() -> None:
        async with worker_running(settings):
            started.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    try:
        assert started.wait(60), "the consumer did not start"
        yield
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(60)
        loop.close()


def test_stateful_job_links(settings, tmp_path):
    """The job links, walked from real submissions (an Arrow body: schemathesis cannot make one, so this machine's
    own root makes them): each target is called with the id the submit answered, never a 404, and answers as
    documented. A submission goes to `parked`, a group without consumers, where it stays queued, or to `default`,
    where it is waited for (long polls) until it succeeded, so the links find both states."""
    settings = with_groups(settings, tmp_path, {"default": {}, "parked": {"max_instances": 0}})
    token = asyncio.run(make_token(settings, "olga", Role.OPERATOR, "platform"))
    calls: Counter[tuple[str, int]] = Counter()

    with api_in_thread(settings, port=0) as url, consumer_in_thread(settings), \
            httpx.Client(base_url=url, headers=bearer(token), timeout=120) as http:
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json").include(path_regex=r"^/v1/jobs")
        submit = schema["/v1/jobs"]["POST"]

        turns = itertools.count()

        def submission(user: int) -> StepInput:
            # the groups alternate, not drawn: hypothesis's draws here change with the tests run before this one in
            # the process (after test_fair_share.py, 1 of 19 submissions went to `default`, no result link found one)
            group = "parked" if next(turns) % 2 else "default"
            return StepInput.initial(submit.Case(
                query={"output": ["user.f0"], "resource_group": group, "query_name": f"links-{group}"},
                body=arrow_body(pa.table({"user.id": [user]})), media_type="application/vnd.apache.arrow.stream"))

        class Machine(CountingMachine, schema.as_state_machine()):  # type: ignore[misc]
            SUBMIT_ARROW = transition(name="SUBMIT_ARROW", target=Bundle("catch_all"),
                                      input=st.integers(1, 1000).map(submission),
                                      precondition=is_root_allowed(SUBMIT))

            def before_call(self, case):
                super().before_call(case)
                wait = (case.query or {}).get("wait")
                if isinstance(wait, int | float) and not isinstance(wait, bool) and wait > 1:
                    case.query["wait"] = 1  # a long poll on a queued job holds `wait` s: past the client's timeout

            def after_call(self, response, case):
                super().after_call(response, case)
                if case.operation.label == SUBMIT and response.status_code == 201 and \
                        case.query.get("resource_group") == "default":  # the links then find it succeeded
                    job_id = response.json()["job_id"]
                    for _ in range(10):  # long polls, each answered at the job's finish
                        if http.get(f"/v1/jobs/{job_id}", params={"wait": 30}).json()["status"] == "succeeded":
                            break
                    else:
                        raise AssertionError(f"job {job_id} did not succeed")

        Machine.headers, Machine.calls, Machine.links = bearer(token), calls, JOB_LINKS
        Machine.root_rules = Machine.root_rules | {"SUBMIT_ARROW"}
        Machine.run(settings=hypothesis_settings(max_examples=25, deadline=None, stateful_step_count=8,
                                                 derandomize=True, suppress_health_check=list(HealthCheck)))
    assert calls[(SUBMIT, 201)] >= 2, sorted(calls.items())
    for link, wanted in (("GetJob", {200}), ("GetSummary", {200}), ("GetResult", {200, 409}),
                         ("CancelJob", {200, 409})):
        statuses = _followed(calls, SUBMIT, link)
        assert statuses & wanted, (link, sorted(calls.items()))  # walked, to the job
        # with the submitted id: never 404 (a negative case is 422, or 401 when it spoils the token)
        assert statuses <= wanted | {401, 422}, (link, sorted(calls.items()))
    # both states were met: a succeeded job's result, and a queued job cancelled
    assert 200 in _followed(calls, SUBMIT, "GetResult") and 200 in _followed(calls, SUBMIT, "CancelJob"), \
        sorted(calls.items())
