"""What the CLI prints never holds the Redis password: `jobqueue demo`'s Redis line, and a settings error."""

from __future__ import annotations

import os
import subprocess
import sys

SECRET = "Zq7hunter2-demo-secret"


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("JOBQUEUE_")}
    return subprocess.run([sys.executable, "-m", "jobqueue.cli.main", *args], env={**clean, **env},
                          capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)


def test_demo_prints_the_redis_url_without_its_password(redis_url, environment, tmp_path):
    scheme, rest = redis_url.split("://", 1)
    with_password = f"{scheme}://:{SECRET}@{rest.split('@', 1)[-1]}"
    proc = cli("demo", "--users", "50", "--rows", "50", "--home", str(tmp_path / "demo"),
               JOBQUEUE_REDIS_URL=with_password, JOBQUEUE_ENVIRONMENT=environment, JOBQUEUE_HOME=str(tmp_path))
    out = proc.stdout + proc.stderr
    assert f"Redis: {scheme}://{rest.split('@', 1)[-1]}" in out, out  # printed, without the credentials
    assert SECRET[:4] not in out, out


def test_a_settings_error_names_the_variable_and_hides_the_password(tmp_path):
    proc = cli("status", JOBQUEUE_REDIS_PASSWORD=SECRET, JOBQUEUE_REGISTRY_PATH=str(tmp_path / "missing.yaml"))
    assert proc.returncode == 2, proc.stderr
    err = " ".join(proc.stderr.split())  # rich wraps long lines
    assert "JOBQUEUE_REGISTRY_PATH: file" in err and "does not exist" in err, err
    assert SECRET[:4] not in proc.stdout + proc.stderr
