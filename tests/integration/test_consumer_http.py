"""A consumer process serves /healthz, /readyz and process metrics when given a port, and exits 0 once drained
even when the interpreter's teardown would hang."""

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


def start_consumer(settings, argv: list[str], consumer_id: str, **popen) -> tuple[subprocess.Popen, int]:
    """A consumer process on `settings` with its HTTP port, once its /readyz answers 200."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBQUEUE_")}
    env.update(settings.to_env())
    env.update(JOBQUEUE_CONSUMER_HTTP_PORT=str(port), JOBQUEUE_CONSUMER_ID=consumer_id)
    proc = subprocess.Popen([sys.executable, *argv], env=env, **popen)
    deadline = time.monotonic() + 30
    while get(port, "/readyz")[0] != 200:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise AssertionError("consumer never became ready")
        time.sleep(0.05)
    return proc, port


def test_consumer_probes_and_metrics(settings, tmp_path):
    proc, port = start_consumer(settings, ["-m", "consumer", "--resource-group", "default"], "probe-1",
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert get(port, "/healthz") == (200, "ok\n")
        status, text = get(port, "/metrics")
        assert status == 200 and "process_resident_memory_bytes" in text
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


# The consumer's entry as `python -m consumer` runs it, in a process whose teardown hangs after the drain (as a
# pod's once did past its last log line, until the kubelet's SIGKILL; what hung there is not known): an exit
# handler that never returns.
HANGING_TEARDOWN = """
import atexit, threading
atexit.register(threading.Event().wait)
from consumer.worker import run_consumer
run_consumer("default", 1)
"""


def test_a_drained_consumer_exits_0_at_once_though_the_interpreters_teardown_would_hang(settings):
    # a drain past JOBQUEUE_CONSUMER_DRAIN_SECONDS + TEARDOWN_SECONDS (12 s) prints every thread's stack: a drain
    # that hangs (once, in CI, under load) fails with them rather than with a bare timeout
    settings = settings.model_copy(update={"consumer_drain_seconds": 2})
    proc, _ = start_consumer(settings, ["-c", HANGING_TEARDOWN], "teardown-1", stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError(f"the drained consumer did not exit within 20 s; its output:\n{proc.stdout.read()}") \
                from None
        assert code == 0  # the drain has nothing to wait for; the hanging handler is skipped
        log = proc.stdout.read()
        assert "consumer closed; exiting" in log, log
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
