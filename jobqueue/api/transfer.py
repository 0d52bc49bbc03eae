"""The wire shapes of staged uploads and presigned result URLs (`jobqueue.api.uploads`). Pure data, no I/O."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from jobqueue.upload_store import REF_PATTERN

InputType = Literal["application/vnd.apache.arrow.stream", "application/vnd.apache.parquet"]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class UploadRequest(_Wire):
    """What a client will PUT: its exact size (signed into the URL) and its media type."""

    size: int = Field(ge=1, description="The input's size in bytes: the PUT must send exactly this many (at most "
                      "JOBQUEUE_API_MAX_UPLOAD_BYTES).")
    content_type: InputType = Field(default="application/vnd.apache.arrow.stream",
                                    description="An Arrow IPC stream or a Parquet file, as a submitted body.")


class UploadTicket(_Wire):
    """An upload reference and the presigned PUT that stages its input; submit with `POST /v1/jobs?upload=`."""

    upload: str = Field(pattern=REF_PATTERN, description="The reference to submit with (`upload`).")
    url: str = Field(description="The presigned URL to PUT the input to, with `headers`.")
    method: Literal["PUT"] = "PUT"
    headers: dict[str, str] = Field(description="Headers the PUT must send as they are (they are signed).")
    url_expires_at: datetime = Field(description="The URL works until then (JOBQUEUE_API_PRESIGN_SECONDS).")
    expires_at: datetime = Field(description="The reference can be submitted until then "
                                 "(JOBQUEUE_API_UPLOAD_TTL_SECONDS).")
    max_bytes: int = Field(description="JOBQUEUE_API_MAX_UPLOAD_BYTES.")


class ResultUrl(_Wire):
    """A presigned GET of a succeeded job's result (Parquet), straight from the object store."""

    job_id: str
    url: str
    expires_at: datetime = Field(description="The URL works until then (JOBQUEUE_API_PRESIGN_SECONDS).")
    size: int | None = Field(description="The result file's size in bytes, when the store says.")
