"""A consumer process serves /healthz, /readyz and process metrics when given a port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

from tests.helpers import free_port


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""
    except (urllib.error.URLError, ConnectionError):
        return 0, ""


def test_consumer_probes_and_metrics(settings, tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBQUEUE_")}
    env.update(settings.to_env())
    env.update(JOBQUEUE_CONSUMER_HTTP_PORT=str(port), JOBQUEUE_CONSUMER_ID="probe-1")
    proc = subprocess.Popen([sys.executable, "-m", "consumer", "--resource-group", "default"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while get(port, "/readyz")[0] != 200:
            assert proc.poll() is None and time.monotonic() < deadline, "consumer never became ready"
            time.sleep(0.05)
        assert get(port, "/healthz") == (200, "ok\n")
        status, text = get(port, "/metrics")
        assert status == 200 and "process_resident_memory_bytes" in text
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
