"""The service's HTTP front door: `jobqueue api` (and the API `jobqueue up` starts), FastAPI on uvicorn.

Role: users reach jobqueue with a bearer token over HTTP instead of Redis and storage credentials. Every endpoint
is under `/v1`; the wire schema is `jobqueue.models` (plus the few API-only shapes of `wire`), and the OpenAPI
document at `/openapi.json` is exact because every route declares its response model.

- `app`: `create_app(settings)`, the lifespan (one SDK client, one `TokenStore`) and the error handlers.
- `deps`: who is calling (`caller`: `TokenStore.verify`, 401 with the reason), `allow` (the pure
  `jobqueue.auth.authorize` policy, 403 or a concealing 404), the audit log line of every mutating call.
- `jobs`, `submit`, `listing`: the jobs API (submit, read, list with cursors, cancel, result, summary).
- `uploads`, `transfer`: presigned transfers with S3 storage (`POST /v1/uploads` and a PUT, submit `?upload=`,
  `GET /v1/jobs/{id}/result-url`), signed by `jobqueue.presign`; upload records in `jobqueue.upload_store`.
- `operations`: groups status, schedules, health, readiness and metrics.
- `server`: uvicorn, in the foreground (`jobqueue api`) or in a thread (`jobqueue up`, tests).

I/O rule: the API reaches Redis only through the SDK (`AsyncJobQueueClient`, `JobStore`), `TokenStore`,
`UploadStore` (upload records) and the read helpers of `jobqueue` (`group_status`, `schedule_control`), and
storage only through `Storage`. It is stateless: N replicas can serve the same environment. It never imports
`manager` or `consumer`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:  # lazy: the SDK imports `jobqueue.api.wire` without FastAPI's app
    if name == "create_app":
        from jobqueue.api.app import create_app

        return create_app
    raise AttributeError(f"module 'jobqueue.api' has no attribute {name!r}")
