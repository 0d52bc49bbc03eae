"""`make demo` keeps working: run `jobqueue demo` as a user would and read its own checks."""

from __future__ import annotations

import os
import subprocess
import sys


def test_demo_runs_end_to_end(redis_url, environment, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBQUEUE_")}
    env.update(JOBQUEUE_REDIS_URL=redis_url, JOBQUEUE_ENVIRONMENT=environment, JOBQUEUE_HOME=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, "-m", "jobqueue.cli.main", "demo", "--home", str(tmp_path / "demo")],
        env=env, capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    for check in ("✓ every query succeeded", "✓ tight group spilled", "✓ default scaled 0 → N → 0",
                  "✓ tight scaled 0 → N → 0"):
        assert check in out, out
