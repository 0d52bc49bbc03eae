"""The documented answers shared by routes (so that `/openapi.json` lists every status a route gives) and the
media types of query input and results. Pure data."""

from __future__ import annotations

from typing import Any

from jobqueue.api.wire import ErrorBody

ARROW_STREAM_TYPE = "application/vnd.apache.arrow.stream"
PARQUET_TYPE = "application/vnd.apache.parquet"
INPUT_TYPES = (ARROW_STREAM_TYPE, PARQUET_TYPE)


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


# every /v1 route: authentication, authorization, bad input, an unreachable Redis
ERRORS: dict[int | str, dict[str, Any]] = {
    400: _error("A JSON body that does not parse."),
    401: _error("No token, or a token that is unknown, expired or revoked (`reason` says which)."),
    403: _error("The token's role may not do this."),
    404: _error("No such job, or one the caller may not see."),
    409: _error("The job's state does not allow this, or a job id prefix matches several jobs."),
    410: _error("The result was removed by retention."),
    422: _error("Bad input: `field` names it, `detail` says the fix."),
    503: _error("Redis cannot be reached."),
}
SUBMIT_ERRORS: dict[int | str, dict[str, Any]] = {
    400: _error("A JSON body that does not parse."),
    413: _error("The body is over JOBQUEUE_API_MAX_BODY_BYTES."),
    415: _error("The body is neither an Arrow IPC stream nor Parquet."),
}
PARQUET: dict[int | str, dict[str, Any]] = {
    200: {"content": {PARQUET_TYPE: {"schema": {"type": "string", "format": "binary"}}},
          "description": "The result as one Parquet file."},
}
