"""Errors raised to jobqueue users.

    JobQueueError
    ├── InvalidQueryError        bad input rejected at submit, before anything is enqueued;
    │                            `.field` names the offending argument, the message says the fix
    ├── ConfigError              a registry or resource-group file that does not validate
    │   ├── SettingsError        a `JOBQUEUE_*` setting that does not validate or does not exist;
    │   │   │                    `.variables` names them, and no secret value is ever in the message
    │   │   └── NoServerError    no JOBQUEUE_REDIS_URL and no running `jobqueue up`: nothing to connect to
    │   └── RegistryMismatchError the client's registry file (JOBQUEUE_REGISTRY_PATH) is not the version the
    │                            service plans against: nothing is submitted
    ├── RegistryVersionNotFound  no stored registry version by that number or id (a job's pinned version: the
    │                            job fails, it never runs on another version)
    ├── AuthenticationError      the API refused the token (`.reason`: missing, unknown, expired, revoked)
    ├── PermissionDeniedError    the API's policy refused the call to this token's role (403)
    ├── JobNotFoundError         no record for that job id (expired or never submitted)
    ├── AmbiguousJobIdError      a job id prefix that several jobs share; `.candidates` lists them
    ├── JobFailedError           the job ended `failed`; `.record` holds the error and summary
    ├── JobCancelledError        the job ended `cancelled`
    ├── JobStateError            the operation does not fit the job's state (e.g. cancel a running job)
    ├── QuotaExceededError       a submission over a quota (queued jobs of the owner or team, input rows):
    │                            nothing was staged or enqueued; `.quota`, `.subject`, `.limit`, `.current`
    ├── ResultGoneError          the job succeeded but its result file was removed (retention); also a
    │                            `FileNotFoundError`
    └── RedisUnavailableError    Redis could not be reached; also a `ConnectionError`
        ├── JobLostError         the embedded server of `jobqueue up` is gone, and the job with it
        └── ApiUnavailableError  the HTTP API could not be reached, or answered that it cannot reach Redis (503)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jobqueue.models import JobRecord


class JobQueueError(Exception):
    """Base class of every jobqueue error."""


class InvalidQueryError(JobQueueError, ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class ConfigError(JobQueueError, ValueError):
    pass


class SettingsError(ConfigError):
    def __init__(self, message: str, variables: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.variables = variables


class NoServerError(SettingsError):
    """No Redis is configured: never a guess at 127.0.0.1:6379, which on a shared host is somebody else's."""


class RegistryMismatchError(ConfigError):
    pass


class RegistryVersionNotFound(JobQueueError, LookupError):
    pass


class AuthenticationError(JobQueueError, PermissionError):
    """The API refused the token: `.reason` says why (missing, unknown, expired, revoked), the message the fix."""

    def __init__(self, message: str, reason: str = "unknown") -> None:
        super().__init__(message)
        self.reason = reason


class PermissionDeniedError(JobQueueError, PermissionError):
    pass


class JobNotFoundError(JobQueueError, KeyError):
    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else "job not found"


class AmbiguousJobIdError(JobQueueError, ValueError):
    def __init__(self, prefix: str, candidates: list[str]) -> None:
        shown = ", ".join(candidates[:10]) + (f" and {len(candidates) - 10} more" if len(candidates) > 10 else "")
        super().__init__(f"job id prefix {prefix!r} matches {len(candidates)} jobs: {shown}; give more characters")
        self.prefix = prefix
        self.candidates = candidates


class JobFailedError(JobQueueError):
    def __init__(self, record: JobRecord) -> None:
        super().__init__(f"job {record.job_id} failed: {record.error}")
        self.record = record


class JobCancelledError(JobQueueError):
    pass


class JobStateError(JobQueueError):
    pass


class QuotaExceededError(JobQueueError):
    """A submission over a quota (`jobqueue.quotas`); the message names the quota, its limit, the current count and
    the fix. The API answers it with 429."""

    def __init__(self, message: str, *, quota: str, subject: str, limit: int, current: int) -> None:
        super().__init__(message)
        self.quota = quota  # `max_queued_per_owner`, `max_queued_per_team`, `max_input_rows` or uploads' (QUOTA)
        self.subject = subject  # the owner or team it applies to
        self.limit = limit
        self.current = current  # the unfinished jobs counted, or the input's rows


class ResultGoneError(JobQueueError, FileNotFoundError):
    pass


class RedisUnavailableError(JobQueueError, ConnectionError):
    pass


class JobLostError(RedisUnavailableError):
    """The job lived in the embedded server of `jobqueue up`, which keeps nothing once it stops: resubmit it."""


class ApiUnavailableError(RedisUnavailableError):
    """The HTTP API did not answer (or could not reach Redis): a `wait()` waits it out, as a Redis outage."""
