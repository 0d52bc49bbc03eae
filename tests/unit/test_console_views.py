"""The console's pure parts: durations, sizes, waits and stage bars; where sign-in may send a browser; the vendored
htmx is the npm file it names, unchanged."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta

from jobqueue.console import views
from jobqueue.console.web import HERE, safe_next
from jobqueue.models import JobRecord, JobStatus, PerformanceSummary

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def record(status: JobStatus, started: int | None = None, finished: int | None = None) -> JobRecord:
    return JobRecord(job_id="j1", status=status, resource_group="default", output=["user.f0"], input_rows=1,
                     submitted_at=T0, started_at=T0 + timedelta(seconds=started) if started is not None else None,
                     finished_at=T0 + timedelta(seconds=finished) if finished is not None else None)


def test_durations_and_sizes_read_as_people_write_them() -> None:
    assert [views.duration(s) for s in (None, 0.25, 12.34, 245, 7380)] == [
        "—", "250 ms", "12.3 s", "4 min 05 s", "2 h 03 min"]
    assert [views.size(n) for n in (None, 0, 1023, 1536, 3 << 20)] == ["—", "0 B", "1023 B", "1.5 KiB", "3.0 MiB"]


def test_wait_and_run_times_of_each_state() -> None:
    now = T0 + timedelta(seconds=100)
    assert (views.wait_seconds(record(JobStatus.QUEUED), now), views.run_seconds(record(JobStatus.QUEUED), now)) == (
        100.0, None)
    running = record(JobStatus.RUNNING, started=30)
    assert (views.wait_seconds(running, now), views.run_seconds(running, now)) == (30.0, 70.0)
    done = record(JobStatus.SUCCEEDED, started=30, finished=45)
    assert (views.wait_seconds(done, now), views.run_seconds(done, now)) == (30.0, 15.0)
    assert views.wait_seconds(record(JobStatus.CANCELLED), now) is None  # cancelled before it ran


def test_stage_bars_are_shares_of_the_longest_stage() -> None:
    summary = PerformanceSummary(consumer_id="c", spill_enabled=True, spilled_bytes=0, memory_limit_bytes=1,
                                 peak_memory_bytes=1, threads=1, rows_in=1, rows_out=1, queue_wait_seconds=0,
                                 execution_seconds=1, total_seconds=1, stage_seconds={"plan": 0.5, "execute": 2.0})
    assert [(s.name, s.share) for s in views.stages(summary)] == [("plan", 0.25), ("execute", 1.0)]
    assert views.stages(None) == []


def test_sign_in_sends_a_browser_only_to_a_local_page() -> None:
    assert safe_next("/jobs?state=queued") == "/jobs?state=queued"
    for other in (None, "", "jobs", "//evil.example", "/\\evil.example", "https://evil.example/", "/a\nSet-Cookie:"):
        assert safe_next(other) == "/jobs", other


def test_the_vendored_htmx_is_the_npm_file_it_names() -> None:
    text = (HERE / "static" / "htmx.min.js").read_bytes()
    header, _, original = text.partition(b" */\n")
    named = re.search(rb"sha256 of the original file:\n \* ([0-9a-f]{64})", header)
    assert named and b"Zero-Clause BSD" in header
    assert hashlib.sha256(original).hexdigest() == named.group(1).decode()
