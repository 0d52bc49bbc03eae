"""The curated public API: adding or removing a name is a deliberate change."""

import jobqueue


def test_public_names():
    assert sorted(jobqueue.__all__) == sorted([
        "AmbiguousJobIdError", "AsyncJobHandle", "AsyncJobQueueClient", "AuthenticationError", "ConfigError",
        "InvalidQueryError",
        "JobCancelledError", "JobFailedError", "JobHandle", "JobNotFoundError", "JobQueueClient", "JobQueueError",
        "JobRecord",
        "JobStateError", "JobStatus", "LocalResult", "PerformanceSummary", "QuotaExceededError",
        "RedisUnavailableError", "ResourceRequests",
        "ScheduledQuery",
        "Settings",
        "ResultGoneError", "SettingsError",
        "WaitCode", "WaitReason",
        "load_settings",
    ])
    for name in jobqueue.__all__:
        assert getattr(jobqueue, name) is not None
