"""Short-lived presigned S3 URLs, signed by botocore (the `s3` extra: `pip install 'jobqueue[s3]'`).

    presigner = Presigner(settings)
    put = presigner.put_url("s3://bucket/key", size=1234, content_type=PARQUET_TYPE, seconds=900)
    get = presigner.get_url("s3://bucket/result.parquet", seconds=900, filename="<job>.parquet")
    put.url, put.expires_at

A PUT URL signs `Content-Length` and `Content-Type`: S3 refuses a PUT of another size or type, so the size a
client declared (and the API checked against JOBQUEUE_API_MAX_UPLOAD_BYTES) is the size it can store. Signing is
local (no request to S3); only finding credentials in the AWS chain may do I/O, once. Endpoint, region and keys are
the `JOBQUEUE_S3_*` settings, as for pyarrow's S3 file system (`jobqueue.storage`), so a URL points at the same
store the service reads.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

from jobqueue.errors import ConfigError
from jobqueue.settings import Settings


def s3_location(uri: str) -> tuple[str, str]:
    """(bucket, key) of `s3://bucket/key`; ValueError for another URI."""
    if not uri.startswith("s3://"):
        raise ValueError(f"{uri!r} is not an s3:// URI")
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not bucket or not key:
        raise ValueError(f"{uri!r} names no bucket and key")
    return bucket, key


@dataclass(frozen=True)
class Presigned:
    url: str
    expires_at: datetime  # the URL's own: when it was signed (`X-Amz-Date`, to the second) plus its seconds


def _presigned(url: str) -> Presigned:
    query = parse_qs(urlsplit(url).query)
    signed_at = datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    return Presigned(url, signed_at + timedelta(seconds=int(query["X-Amz-Expires"][0])))


class Presigner:
    """Signs URLs for the S3 store of one set of settings. Thread-safe; the botocore client is made once."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client: Any = None
        self._lock = threading.Lock()

    def _s3(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def _make_client(self) -> Any:
        try:
            import botocore.session
            from botocore.config import Config
        except ImportError:
            raise ConfigError("presigned URLs need botocore, which the `s3` extra installs: pip install "
                              "'jobqueue[s3]'") from None
        s = self.settings
        options: dict[str, Any] = {"region_name": s.s3_region or "us-east-1"}
        if s.s3_endpoint_url:  # MinIO, moto, another S3-compatible store: path-style, as pyarrow addresses it
            options["endpoint_url"] = s.s3_endpoint_url
        if s.s3_access_key_id and s.s3_secret_access_key:
            options.update(aws_access_key_id=s.s3_access_key_id,
                           aws_secret_access_key=s.s3_secret_access_key.get_secret_value())
        style = "path" if s.s3_endpoint_url else "auto"
        config = Config(signature_version="s3v4", s3={"addressing_style": style})
        return botocore.session.get_session().create_client("s3", config=config, **options)

    def put_url(self, uri: str, *, size: int, content_type: str, seconds: int) -> Presigned:
        """A URL that PUTs exactly `size` bytes of `content_type` at `uri`, for `seconds`."""
        bucket, key = s3_location(uri)
        params = {"Bucket": bucket, "Key": key, "ContentLength": size, "ContentType": content_type}
        return _presigned(str(self._s3().generate_presigned_url("put_object", Params=params, ExpiresIn=seconds,
                                                                HttpMethod="PUT")))

    def get_url(self, uri: str, *, seconds: int, filename: str | None = None) -> Presigned:
        """A URL that GETs the object at `uri` for `seconds` (saved as `filename` by a browser)."""
        bucket, key = s3_location(uri)
        params: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if filename:
            params["ResponseContentDisposition"] = f'attachment; filename="{filename}"'
        return _presigned(str(self._s3().generate_presigned_url("get_object", Params=params, ExpiresIn=seconds,
                                                                HttpMethod="GET")))
