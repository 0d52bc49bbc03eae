"""`make demo` keeps working: run `jobqueue demo` as a user would, in 80 columns, and read its own checks."""

from __future__ import annotations

import os
import re
import subprocess
import sys


def test_demo_runs_end_to_end(redis_url, environment, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBQUEUE_")}
    env.update(JOBQUEUE_REDIS_URL=redis_url, JOBQUEUE_ENVIRONMENT=environment, JOBQUEUE_HOME=str(tmp_path),
               COLUMNS="80")
    proc = subprocess.run(
        [sys.executable, "-m", "jobqueue.cli.main", "demo", "--home", str(tmp_path / "demo")],
        env=env, capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    for check in ("✓ every query succeeded at its first attempt", "✓ tight group spilled", "✓ default scaled 0 → N → 0",
                  "✓ tight scaled 0 → N → 0"):
        assert check in out, out
    wide = [line for line in proc.stdout.splitlines() if len(line) > 80]  # rich sizes its output by COLUMNS
    assert not wide, "\n".join(wide)
    summary = proc.stdout.split("performance summaries")[1].split("consumers of")[0]
    rows = re.findall(r"^ *[0-9a-f]{8} +(?:default|tight) +[0-9,]+ +[0-9.]+s +[0-9.]+s .*$", summary, re.MULTILINE)
    assert len(rows) == 6 and len(summary.strip().splitlines()) == 6 + 1, summary  # the header, a line per job
