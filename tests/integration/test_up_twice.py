"""A second `jobqueue up` never harms the first: it exits 2 with one line, before starting anything.

Real processes: the first `jobqueue up` (embedded Valkey, local backend) runs in a temporary home; a second one
in the same home is refused naming the first's pid, and one in another home on the same manager port is refused
naming the port setting. The first keeps its `redis.url`, keeps answering, and stops cleanly on SIGINT.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import redis

from tests.helpers import free_port


def _env(home: Path, port: int, environment: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBQUEUE_")}
    env.update(JOBQUEUE_HOME=str(home), JOBQUEUE_MANAGER_HTTP_PORT=str(port), JOBQUEUE_ENVIRONMENT=environment,
               JOBQUEUE_LOG_FORMAT="json")
    return env


def _up(env: dict[str, str], cwd: Path, **kw) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "jobqueue.cli.main", "up"], env=env, cwd=cwd, text=True,
                            stdin=subprocess.DEVNULL, **kw)


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _wait_until_up(process: subprocess.Popen[str], home: Path, port: int, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while not ((home / "redis.url").is_file() and _healthy(port)):
        assert process.poll() is None, f"first `jobqueue up` exited with {process.returncode}"
        assert time.monotonic() < deadline, "first `jobqueue up` did not come up in time"
        time.sleep(0.1)
    return (home / "redis.url").read_text().strip()


def _refused(env: dict[str, str], cwd: Path) -> tuple[str, str]:
    done = subprocess.run([sys.executable, "-m", "jobqueue.cli.main", "up"], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    assert "manager started" not in done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    return " ".join(done.stderr.split()), done.stdout


def test_second_up_is_refused_and_the_first_keeps_running(tmp_path, environment):
    home, port = tmp_path / "home", free_port()
    first = _up(_env(home, port, environment), tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = _wait_until_up(first, home, port)

        message, _ = _refused(_env(home, free_port(), environment), tmp_path)  # same home
        assert "already running" in message and f"pid {first.pid}" in message and str(home) in message, message
        assert f"kill {first.pid}" in message

        other_home = tmp_path / "other-home"
        message, _ = _refused(_env(other_home, port, environment), tmp_path)  # same manager port
        assert "JOBQUEUE_MANAGER_HTTP_PORT" in message and f"port {port}" in message, message
        assert not (other_home / "redis.url").exists()

        assert (home / "redis.url").read_text().strip() == url  # the first's record is still there
        with redis.Redis.from_url(url) as client:
            assert client.ping()
        assert _healthy(port) and first.poll() is None
    finally:
        first.send_signal(signal.SIGINT)
        assert first.wait(timeout=60) == 0
    assert not (home / "redis.url").exists()  # the first removes its own record on a clean stop
