"""A job's timeline on its console page (pure): submitted → queued (its wait) → each attempt with its start, end,
outcome and error → the final state; older records with only `started_at`; and the page's bars' shares."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from jobqueue.console import views
from jobqueue.models import JobRecord, JobStatus

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def job(status: JobStatus, **fields: object) -> JobRecord:
    return JobRecord.model_validate({"job_id": "j1", "status": status, "resource_group": "default",
                                     "output": ["user.f0"], "input_rows": 1, "submitted_at": T0, **fields})


def test_a_queued_job_waits_on_the_queued_step() -> None:
    steps = views.timeline(job(JobStatus.QUEUED), at(30))
    assert [(s.kind, s.seconds, s.current) for s in steps] == [("submitted", None, False), ("queued", 30.0, True)]


def test_a_retried_then_succeeded_job_shows_both_attempts_with_their_times_and_error() -> None:
    record = job(JobStatus.SUCCEEDED, attempts=2, started_at=at(20), finished_at=at(50),
                 attempt_starts=[at(5), at(20)], attempt_ends=[at(12), at(50)], errors=["attempt 1: lost"])
    steps = views.timeline(record, at(100))
    assert [s.label for s in steps] == ["submitted", "queued", "attempt 1", "attempt 2", "succeeded"]
    assert steps[1].seconds == 5.0  # the wait before the first attempt
    first, second = steps[2].attempt, steps[3].attempt
    assert first is not None and second is not None
    assert (first.started_at, first.ended_at, first.seconds, first.outcome, first.error) == (
        at(5), at(12), 7.0, "requeued", "attempt 1: lost")
    assert (second.seconds, second.outcome, second.error) == (30.0, "succeeded", None)
    assert [s.current for s in steps] == [False, False, False, False, True]


def test_a_running_attempt_runs_until_now_and_a_requeued_job_waits_again() -> None:
    running = views.timeline(job(JobStatus.RUNNING, attempts=1, started_at=at(5), attempt_starts=[at(5)]), at(9))
    assert running[-1].attempt is not None and running[-1].attempt.outcome == "running"
    assert running[-1].seconds == 4.0 and running[-1].current
    again = views.timeline(job(JobStatus.QUEUED, attempts=1, attempt_starts=[at(5)], attempt_ends=[at(8)],
                               errors=["attempt 1: out of memory"]), at(9))
    assert [s.label for s in again][-2:] == ["attempt 1", "queued again"] and again[-1].current


def test_a_failed_job_without_per_attempt_errors_shows_its_error_on_the_last_attempt() -> None:
    record = job(JobStatus.EXPIRED, attempts=1, started_at=at(1), finished_at=at(3), attempt_starts=[at(1)],
                 attempt_ends=[at(3)], error="not done by its completion deadline")
    (attempt,) = views.attempts(record, at(4))
    assert attempt.outcome == "expired" and attempt.error == "not done by its completion deadline"


def test_an_older_record_has_the_last_attempts_start_only() -> None:
    record = job(JobStatus.FAILED, attempts=2, started_at=at(10), finished_at=at(15), errors=["a1", "a2"])
    first, last = views.attempts(record, at(20))
    assert first.started_at is None and first.seconds is None and first.error == "a1"
    assert (last.started_at, last.ended_at, last.seconds, last.outcome, last.error) == (at(10), at(15), 5.0, "failed",
                                                                                        "a2")


def test_a_job_cancelled_while_queued_has_no_attempt() -> None:
    steps = views.timeline(job(JobStatus.CANCELLED, finished_at=at(7)), at(9))
    assert [(s.kind, s.label, s.seconds) for s in steps] == [("submitted", "submitted", None),
                                                             ("queued", "queued", 7.0), ("final", "cancelled", None)]


def test_bar_shares_stay_between_0_and_1() -> None:
    assert [views.share(p, w) for p, w in ((0, 0), (5, 10), (30, 10))] == [0.0, 0.5, 1.0]
