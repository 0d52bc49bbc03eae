"""The README's client pattern leaves nothing behind: no unclosed connection reported at exit, with or without
`with`, and `close()` may be called twice."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from jobqueue import JobQueueClient
from tests.api_support import make_token
from tests.helpers import with_groups

README = Path(__file__).resolve().parents[2] / "README.md"
QUERY = ('client.offline_query(input={"user.id": [1, 2, 3]}, output=["user.f0"], '
         'resources=ResourceRequests(resource_group="paused"))')
PATTERNS = {
    "with": f"""
        with JobQueueClient() as client:
            job = {QUERY}
            try:
                job.wait(timeout=0.5, show_progress=True)
            except TimeoutError as e:
                print(e)
    """,
    "no close": f"""
        client = JobQueueClient()
        job = {QUERY}
        try:
            job.wait(timeout=0.5, show_progress=True)
        except TimeoutError as e:
            print(e)
    """,
    "close twice": f"""
        client = JobQueueClient()
        job = {QUERY}
        client.close()
        client.close()
        print("closed")
    """,
}


def test_the_readme_example_uses_a_with_block():
    example = README.read_text().split("```python", 1)[1].split("```", 1)[0]
    assert re.search(r"^with JobQueueClient\(\) as client:", example, re.M), example


SLOW_STEP = re.compile(r"^Executing <.*> took \d+\.\d+ seconds\n", re.M)


def test_the_client_leaves_no_connection_to_be_reported_at_exit(settings, tmp_path):
    settings = with_groups(settings, tmp_path, {"paused": {"max_instances": 0}})  # wait() times out
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBQUEUE_")}
    env.update(JOBQUEUE_REDIS_URL=str(settings.redis_url), JOBQUEUE_ENVIRONMENT=settings.environment,
               JOBQUEUE_HOME=str(settings.home), JOBQUEUE_REGISTRY_PATH=str(settings.registry_path),
               JOBQUEUE_RESOURCE_GROUPS_PATH=str(settings.resource_groups_path))
    _run_patterns(env)


async def test_an_http_client_leaves_no_connection_to_be_reported_at_exit(settings, tmp_path):
    """The same patterns over HTTP (`JOBQUEUE_API_URL` and a token, what `jobqueue up` gives a user): the SDK's
    aiohttp transport (jobqueue.api_transport) leaves no unclosed session or connector behind either."""
    from jobqueue.api.server import api_in_thread  # the API's imports only where a test serves it

    settings = with_groups(settings, tmp_path, {"paused": {"max_instances": 0}})
    token = await make_token(settings, "alice")
    with api_in_thread(settings, port=0) as served:
        env = {k: v for k, v in os.environ.items() if not k.startswith("JOBQUEUE_")}
        env.update(JOBQUEUE_API_URL=served, JOBQUEUE_API_TOKEN=token, JOBQUEUE_HOME=str(tmp_path / "client-home"))
        _run_patterns(env)


def _run_patterns(env: dict[str, str]) -> None:
    for name, body in PATTERNS.items():
        script = "from jobqueue import JobQueueClient, ResourceRequests\n" + textwrap.dedent(body)
        # -X dev shows every ResourceWarning (an unclosed connection or transport), not only the `__del__` errors
        p = subprocess.run([sys.executable, "-X", "dev", "-c", script], env=env, capture_output=True, text=True,
                           timeout=60)
        # asyncio's debug mode (-X dev) also reports a step slower than 0.1 s (an import on a loaded machine):
        # speed is not what this test is about
        stderr = SLOW_STEP.sub("", p.stderr)
        assert p.returncode == 0 and stderr == "", (name, p.returncode, p.stdout, p.stderr)
        assert "still queued after the timeout" in p.stdout or "closed" in p.stdout, (name, p.stdout)


def test_close_twice_in_process(settings):
    client = JobQueueClient(settings)
    client.close()
    client.close()
