"""The profiling daemon on a fake clock (rotation, retention, naming, uploads to moto's S3, retries,
a full disk), and real captures with perf and py-spy where this machine permits them."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest
import structlog

from jobqueue.profiler.collectors import CaptureError, PerfCollector, PySpyCollector, choose_collector
from jobqueue.profiler.daemon import ObjectStoreUploader, ProfilerDaemon
from jobqueue.profiler.targets import Target, find_targets
from tests.helpers import eventually, running_manager, with_groups

START = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)


class FakeCollector:
    name, kind = "fake", "perf-data"

    def __init__(self, clock: FakeClock) -> None:
        self.clock, self.captures = clock, 0

    async def capture(self, targets, seconds, hz, call_graph, out: Path) -> None:
        self.captures += 1
        with gzip.open(out, "wb") as gz:
            gz.write(f"capture {self.captures} pids={[t.pid for t in targets]} hz={hz} g={call_graph}\n".encode())
        self.clock.now += timedelta(seconds=seconds)  # a capture takes its duration


class FakeClock:
    def __init__(self) -> None:
        self.now = START
        self.slept: list[float] = []

    def __call__(self) -> datetime:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += timedelta(seconds=seconds)


def s3_client(endpoint: str):
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test",
                        aws_secret_access_key="test")


def keys(endpoint: str, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in s3_client(endpoint).list_objects_v2(Bucket=bucket).get("Contents", []))


@pytest.fixture
def profiler_settings(s3_settings, s3_bucket, tmp_path):
    return s3_settings.model_copy(update={
        "profiler_export_to": f"s3://{s3_bucket}", "profiler_bucket_subdirectory": "team/profiles",
        "node_name": "node-a", "profiler_dump_duration_seconds": 60, "profiler_max_dumps_retained": 2,
        "profiler_directory": tmp_path / "dumps", "profiler_min_free_bytes": 1000,
    })


def daemon(settings, clock, uploader="s3", free=lambda p: 10**9, targets=lambda: [Target(42, "consumer")]):
    up = ObjectStoreUploader(settings, settings.profiler_export_to) if uploader == "s3" else uploader
    d = ProfilerDaemon(settings, FakeCollector(clock), up, now=clock, sleep=clock.sleep, free_bytes=free,
                       targets=targets)
    d.root.mkdir(parents=True, exist_ok=True)
    return d


async def test_rotation_naming_retention_and_upload(profiler_settings, s3_endpoint, s3_bucket):
    clock = FakeClock()
    d = daemon(profiler_settings, clock)
    assert [await d.cycle() for _ in range(4)] == ["captured"] * 4
    names = [f"20261122T12{m:02d}00Z-perf-data.gz" for m in range(4)]  # one dump per 60 s, named by its start
    assert keys(s3_endpoint, s3_bucket) == [f"team/profiles/node-a/{n}" for n in names]
    assert sorted(p.name for p in d.root.iterdir()) == sorted(
        [names[2], names[3], names[2] + ".uploaded", names[3] + ".uploaded"]), "the newest 2 kept locally"
    body = s3_client(s3_endpoint).get_object(Bucket=s3_bucket, Key=f"team/profiles/node-a/{names[3]}")["Body"]
    assert gzip.decompress(body.read()) == b"capture 4 pids=[42] hz=99 g=True\n"
    assert clock.slept == []


async def test_failed_uploads_are_retried_with_backoff_then_after_the_next_capture(profiler_settings, s3_endpoint):
    clock = FakeClock()
    bucket = "not-yet-created"
    settings = profiler_settings.model_copy(update={"profiler_export_to": f"s3://{bucket}",
                                                    "profiler_max_dumps_retained": 5})
    d = daemon(settings, clock)
    with structlog.testing.capture_logs() as events:
        assert await d.cycle() == "captured"
    assert clock.slept == [1.0, 2.0, 4.0], "4 attempts with backoff"
    assert [e["event"] for e in events if e["log_level"] == "warning"] == [
        "upload failed; retrying after the next capture"]
    assert not list(d.root.glob("*.uploaded"))
    s3_client(s3_endpoint).create_bucket(Bucket=bucket)  # the bucket comes back
    assert await d.cycle() == "captured"
    assert len(keys(s3_endpoint, bucket)) == 2, "the earlier dump is uploaded with the new one"
    assert len(list(d.root.glob("*.uploaded"))) == 2


async def test_a_full_disk_stops_capturing_warns_once_and_resumes(profiler_settings):
    clock = FakeClock()
    free = {"bytes": 10}
    d = daemon(profiler_settings, clock, uploader=None, free=lambda p: free["bytes"])
    with structlog.testing.capture_logs() as events:
        assert [await d.cycle() for _ in range(3)] == ["disk_full"] * 3
        free["bytes"] = 10**9
        assert await d.cycle() == "captured"
    assert [e["event"] for e in events] == [
        "dump directory nearly full; capturing stopped until space is back",
        "dump directory has space again; capturing", "capturing", "captured"]
    assert d.collector.captures == 1


async def test_no_jobqueue_process_means_no_capture_and_no_upload(profiler_settings, s3_endpoint, s3_bucket):
    clock = FakeClock()
    d = daemon(profiler_settings, clock, targets=lambda: [])
    assert await d.cycle() == "idle" and d.pause() == 10.0
    assert d.collector.captures == 0 and keys(s3_endpoint, s3_bucket) == []


async def test_run_stops_promptly(profiler_settings):
    clock = FakeClock()
    d = daemon(profiler_settings, clock, uploader=None, targets=lambda: [])
    stop = asyncio.Event()
    task = asyncio.create_task(d.run(stop))
    stop.set()
    await asyncio.wait_for(task, 5)


# --- real captures -----------------------------------------------------------------------------------------

BUSY = textwrap.dedent("""
    import sys, time
    from jobqueue.profiler.targets import announce_role
    from jobqueue.plan import plan_query
    from jobqueue.registry import load_registry
    announce_role("consumer")
    registry = load_registry(sys.argv[1])
    print("ready", flush=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        plan_query(["user.id"], ["user.f0", "user.f1"], registry)
""")


@pytest.fixture
def busy_consumer(store):
    proc = subprocess.Popen([sys.executable, "-c", BUSY, str(store.registry_path)], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    yield Target(proc.pid, "consumer")
    proc.kill()
    proc.wait()
    proc.stdout.close()


def test_find_targets_sees_a_process_that_announced_its_role(busy_consumer):
    assert busy_consumer in find_targets()
    assert Path(f"/proc/{busy_consumer.pid}/comm").read_text().strip() == "jq-consumer"


async def test_a_real_perf_capture(busy_consumer, tmp_path):
    collector = PerfCollector()
    why_not = await collector.probe()
    if why_not is not None:
        pytest.skip(f"perf cannot record here: {why_not}")
    out = tmp_path / "dump-perf-data.gz"
    await collector.capture([busy_consumer], 2, 99, True, out)
    text = gzip.decompress(out.read_bytes()).decode(errors="replace")
    samples = [line for line in text.splitlines() if line.startswith("jq-consumer")]
    assert len(samples) > 20, text[:2000]  # ~99 Hz for 2 s of a busy process
    assert all(f" {busy_consumer.pid} " in line for line in samples)
    assert "libpython" in text or "python" in text  # native frames of the interpreter running our code
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dump-perf-data.gz"], "perf.data removed"


async def test_a_real_py_spy_capture(busy_consumer, tmp_path):
    collector = PySpyCollector()
    if (missing := await collector.probe()) is not None:
        pytest.skip(missing)
    out = tmp_path / "dump-pyspy-folded.gz"
    try:
        await collector.capture([busy_consumer, Target(2**22 + 7, "manager")], 2, 50, True, out)
    except CaptureError as e:
        pytest.skip(f"py-spy may not trace here: {e}")
    text = gzip.decompress(out.read_bytes()).decode()
    assert text.startswith(f"# pid={busy_consumer.pid} role=consumer collector=py-spy rate=50 seconds=2\n")
    assert "plan_query (jobqueue/plan.py" in text, text[:2000]  # the project's Python frames
    assert "pid=4194311" not in text, "a process that does not exist is left out, not fatal"


def test_the_profiler_command_captures_and_uploads_once(profiler_settings, busy_consumer, s3_endpoint, s3_bucket):
    env = {**os.environ, **profiler_settings.to_env(), "JOBQUEUE_PROFILER_DUMP_DURATION_SECONDS": "1",
           "JOBQUEUE_LOG_FORMAT": "json"}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "jobqueue.cli.main", "profiler", "--once"], env=env,
                          capture_output=True, text=True, timeout=120)
    if done.returncode == 2 and "no collector" in done.stderr:
        pytest.skip(done.stderr.strip())
    assert done.returncode == 0, done.stdout + done.stderr
    logs = done.stdout + done.stderr
    assert '"collector": "' in logs and "profiler collector chosen" in logs
    (key,) = keys(s3_endpoint, s3_bucket)
    assert key.startswith("team/profiles/node-a/") and key.endswith(("-perf-data.gz", "-pyspy-folded.gz"))
    assert time.monotonic() - started < 60


async def test_the_collector_falls_back_to_py_spy_and_says_why():
    no_perf, no_py_spy = PerfCollector("/nonexistent/perf"), PySpyCollector("/nonexistent/py-spy")
    collector, why = await choose_collector("auto", perf=no_perf)
    assert collector.name == "py-spy"
    assert why == "falling back to py-spy: /nonexistent/perf is not installed (Debian: linux-perf)"
    collector, why = await choose_collector("py-spy")
    assert collector.name == "py-spy" and "asked for" in why
    with pytest.raises(CaptureError, match="JOBQUEUE_PROFILER_COLLECTOR=perf, but /nonexistent/perf is not installed"):
        await choose_collector("perf", perf=no_perf)
    with pytest.raises(CaptureError, match="no collector: .*perf is not installed .*; and .*py-spy is not installed"):
        await choose_collector("auto", perf=no_perf, py_spy=no_py_spy)


async def test_consumers_started_by_the_manager_are_found_by_role(settings, tmp_path):
    settings = with_groups(settings, tmp_path, {"default": {"min_instances": 2, "max_instances": 2}})
    async with running_manager(settings) as backend:
        await eventually(lambda: len(backend.active("default")) == 2, what="two consumers")
        pids = {c.pid for c in backend.active("default")}

        assert {Target(pid, "consumer") for pid in pids} <= set(find_targets()), "by command line at once"

        def named() -> bool:
            return all(Path(f"/proc/{pid}/comm").read_text().strip() == "jq-consumer" for pid in pids)

        await eventually(named, what="both consumers named jq-consumer once started")
        assert {Target(pid, "consumer") for pid in pids} <= set(find_targets())


def test_profiler_once_takes_its_duration_and_says_what_it_samples(profiler_settings, busy_consumer, s3_endpoint,
                                                                    s3_bucket):
    env = {**os.environ, **profiler_settings.to_env(), "JOBQUEUE_LOG_FORMAT": "json"}  # 60 s per capture, as set
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "jobqueue.cli.main", "profiler", "--once", "--duration", "1"],
                          env=env, capture_output=True, text=True, timeout=120)
    if done.returncode == 2 and "no collector" in done.stderr:
        pytest.skip(done.stderr.strip())
    assert done.returncode == 0, done.stdout + done.stderr
    assert time.monotonic() - started < 45, "--duration 1, not the configured 60 s"
    (line,) = [json.loads(x) for x in (done.stdout + done.stderr).splitlines() if '"capturing"' in x]
    assert line["seconds"] == 1 and busy_consumer.pid in line["pids"] and "consumer" in line["roles"], line
    (key,) = keys(s3_endpoint, s3_bucket)
    assert key.startswith("team/profiles/node-a/")
