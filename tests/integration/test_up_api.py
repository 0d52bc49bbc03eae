"""`jobqueue up` starts the API next to the manager: on JOBQUEUE_API_PORT, or any free port when that one is taken,
says its URL on startup, records it in `<home>/api.url` (next to `redis.url`) and removes it on exit. A query
submitted over HTTP with a token runs on the consumers `up`'s manager starts, and its result downloads; the client
side has no registry file, no Redis URL and no storage path, only the URL and the token."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import socket
import subprocess
import sys
import time
import uuid

import httpx
import pyarrow as pa
import pyarrow.parquet as pq

from tests.api_support import ARROW, alice_token, api_url_of, arrow_body, bearer
from tests.helpers import free_port


def test_up_serves_the_api(tmp_path, store):
    home, environment = tmp_path / "home", f"t-{uuid.uuid4().hex[:12]}"
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))  # JOBQUEUE_API_PORT is busy: `up` takes any free port instead
    taken.listen(1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBQUEUE_")}
    env.update(JOBQUEUE_HOME=str(home), JOBQUEUE_ENVIRONMENT=environment, JOBQUEUE_LOG_FORMAT="json",
               JOBQUEUE_MANAGER_HTTP_PORT=str(free_port()), JOBQUEUE_API_PORT=str(taken.getsockname()[1]),
               JOBQUEUE_REGISTRY_PATH=str(store.registry_path), JOBQUEUE_MANAGER_TICK_SECONDS="0.2",
               JOBQUEUE_CONSUMER_POLL_SECONDS="0.05")
    up = subprocess.Popen([sys.executable, "-m", "jobqueue.cli.main", "up"], env=env, cwd=tmp_path, text=True,
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        url = api_url_of(up, home, timeout=60)
        assert url.startswith("http://127.0.0.1:") and not url.endswith(f":{taken.getsockname()[1]}")
        assert httpx.get(f"{url}/readyz", timeout=10).json()["status"] == "ready"
        token = asyncio.run(alice_token((home / "redis.url").read_text().strip(), environment))
        with httpx.Client(base_url=url, headers=bearer(token), timeout=30) as http:
            r = http.post("/v1/jobs", content=arrow_body(pa.table({"user.id": [1, 2, 3]})), headers=ARROW,
                          params={"output": ["user.f0"]})
            assert r.status_code == 201, r.text
            job_id = r.json()["job_id"]
            while (status := http.get(f"/v1/jobs/{job_id}").json()["status"]) in ("queued", "running"):
                assert time.monotonic() < deadline + 60, f"job {job_id} still {status}"
                time.sleep(0.1)
            assert status == "succeeded"
            result = pq.read_table(io.BytesIO(http.get(f"/v1/jobs/{job_id}/result").content))
        assert result.column("user.id").to_pylist() == [1, 2, 3] and "user.f0" in result.column_names
    finally:
        up.send_signal(signal.SIGINT)
        out, _ = up.communicate(timeout=60)
        taken.close()
    assert up.returncode == 0, out
    assert f"API: {url} (OpenAPI: {url}/openapi.json" in out
    assert not (home / "api.url").exists()
