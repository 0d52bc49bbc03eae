"""The service's HTTP front door: `jobqueue api` (and the API `jobqueue up` starts), FastAPI on uvicorn.

Role: users reach jobqueue with a bearer token over HTTP instead of Redis and storage credentials. Every endpoint
is under `/v1`; the wire schema is `jobqueue.models` (plus the few API-only shapes of `wire`), and the OpenAPI
document at `/openapi.json` is exact because every route declares its response model.

- `app`: `create_app(settings)`, the lifespan (one SDK client, one `TokenStore`) and the error handlers.
- `deps`: who is calling (`caller`: `TokenStore.verify`, 401 with the reason), `allow` (the pure
  `jobqueue.auth.authorize` policy, 403 or a concealing 404), the audit log line of every mutating call.
- `jobs`, `submit`, `listing`: the jobs API (submit, read, list with cursors, cancel, result, summary).
- `operations`: groups status, schedules, health, readiness and metrics.
- `server`: uvicorn, in the foreground (`jobqueue api`) or in a thread (`jobqueue up`, tests).

I/O rule: the API reaches Redis only through the SDK (`AsyncJobQueueClient`, `JobStore`), `TokenStore` and the
read helpers of `jobqueue` (`group_status`, `schedule_control`), and storage only through `Storage`. It is
stateless: N replicas can serve the same environment. It never imports `manager` or `consumer`.
"""

from jobqueue.api.app import create_app

__all__ = ["create_app"]
