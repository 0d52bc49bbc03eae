"""End to end over HTTP: the README example against a real `jobqueue up` (its own home, free ports), run by a
separate Python process whose environment has no registry file and no Redis or storage settings:

- with only JOBQUEUE_API_URL and JOBQUEUE_API_TOKEN (a `user` token): the result equals the direct mode's;
- with only JOBQUEUE_HOME (one machine): the SDK finds `up`'s `api.url` and its 0600 local admin token;
- the CLI with `--api-url` and `--token` lists only the token owner's jobs;
- `up` revokes its local token and removes `api.token` when it stops."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pyarrow.parquet as pq

from jobqueue import AsyncJobQueueClient
from jobqueue.settings import Settings
from tests.api_support import alice_token, api_url_of
from tests.helpers import free_port

README = '''
import sys
from jobqueue import JobQueueClient, PerformanceSummary, ResourceRequests

with JobQueueClient() as client:
    job = client.offline_query(
        input={"user.id": [1, 2, 3]},
        output=["user.f0", "user.logins"],
        run_asynchronously=True,
        resources=ResourceRequests(resource_group="default"),
    )
    job.wait(show_progress=True, timeout=120)
    df, summary = job.to_pandas(), job.performance_summary
assert isinstance(summary, PerformanceSummary), type(summary)
df.to_parquet(sys.argv[1])
print(job.id, summary.rows_out)
'''


def _bare_env(tmp_path: Path, **values: str) -> dict[str, str]:
    """No JOBQUEUE_* at all, a HOME with no ~/.jobqueue, and a working directory with no .env."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBQUEUE_")}
    home = tmp_path / f"user-{uuid.uuid4().hex[:6]}"
    home.mkdir()
    env.update(HOME=str(home), **values)
    return env


async def _direct_result(redis_url: str, environment: str, home: Path):
    settings = Settings(redis_url=redis_url, environment=environment, home=home)
    async with AsyncJobQueueClient(settings) as client:
        assert client.direct
        job = await client.offline_query({"user.id": [1, 2, 3]}, ["user.f0", "user.logins"])
        await job.wait(timeout=120, show_progress=False)
        return job.id, await job.to_arrow()


def test_readme_example_over_http_equals_direct(tmp_path, store):
    home, environment = tmp_path / "up-home", f"t-{uuid.uuid4().hex[:12]}"
    env = _bare_env(tmp_path, JOBQUEUE_HOME=str(home), JOBQUEUE_ENVIRONMENT=environment, JOBQUEUE_LOG_FORMAT="json",
                    JOBQUEUE_MANAGER_HTTP_PORT=str(free_port()), JOBQUEUE_API_PORT=str(free_port()),
                    JOBQUEUE_REGISTRY_PATH=str(store.registry_path), JOBQUEUE_MANAGER_TICK_SECONDS="0.2",
                    JOBQUEUE_CONSUMER_POLL_SECONDS="0.05")
    up = subprocess.Popen([sys.executable, "-m", "jobqueue.cli.main", "up"], env=env, cwd=tmp_path, text=True,
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    script = tmp_path / "readme.py"
    script.write_text(README)
    try:
        url = api_url_of(up, home)
        token_file = home / "api.token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        redis_url = (home / "redis.url").read_text().strip()
        token = asyncio.run(alice_token(redis_url, environment))

        remote_env = _bare_env(tmp_path, JOBQUEUE_API_URL=url, JOBQUEUE_API_TOKEN=token)
        ran = subprocess.run([sys.executable, str(script), str(tmp_path / "http.parquet")], env=remote_env,
                             cwd=tmp_path, capture_output=True, text=True, timeout=180)
        assert ran.returncode == 0, ran.stderr
        http_job = ran.stdout.split()[0]
        assert token not in ran.stdout + ran.stderr

        local_env = _bare_env(tmp_path, JOBQUEUE_HOME=str(home))  # one machine: up's api.url and api.token
        ran_local = subprocess.run([sys.executable, str(script), str(tmp_path / "local.parquet")], env=local_env,
                                   cwd=tmp_path, capture_output=True, text=True, timeout=180)
        assert ran_local.returncode == 0, ran_local.stderr

        direct_job, direct = asyncio.run(_direct_result(redis_url, environment, home))
        over_http = pq.read_table(tmp_path / "http.parquet")
        assert over_http.num_rows == 3
        assert over_http.equals(direct.to_pandas().pipe(lambda df: pq.read_table(_parquet(df, tmp_path))))
        assert pq.read_table(tmp_path / "local.parquet").equals(over_http)

        cli = subprocess.run([sys.executable, "-m", "jobqueue.cli.main", "jobs", "--api-url", url, "--token", token],
                             env={**_bare_env(tmp_path), "COLUMNS": "200"}, cwd=tmp_path, capture_output=True,
                             text=True, timeout=60)
        assert cli.returncode == 0, cli.stderr
        assert http_job in cli.stdout and direct_job not in cli.stdout, cli.stdout
    finally:
        up.send_signal(signal.SIGINT)
        out, _ = up.communicate(timeout=60)
    assert up.returncode == 0, out
    assert "your local admin token:" in out  # (rich wraps the path at 80 columns)
    assert not token_file.exists() and not (home / "api.url").exists()


def _parquet(df, tmp_path: Path) -> Path:
    """The direct result through pandas and Parquet, as the README script writes it."""
    path = tmp_path / "direct.parquet"
    df.to_parquet(path)
    return path
