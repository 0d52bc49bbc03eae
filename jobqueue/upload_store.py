"""Staged uploads: a query input a client PUTs straight to the object store with a presigned URL, then submits
by reference (`POST /v1/uploads`, then `POST /v1/jobs?upload=<ref>`), so that a large input passes neither
through the API's request body nor through Redis.

    upload = await uploads.create(owner, team, size, content_type)   # a record in Redis, with a TTL
    upload = await uploads.take(ref, owner)     # claims it once: None if unknown, expired, taken or another's
    await uploads.give_back(upload)             # a submit that failed: the reference works again until it expires

The object lives at `<staging>/<environment>/_uploads/<owner>/<ref>/input` (each part encoded by
`path_component`): under a prefix per owner, and never in a job's folder. `_uploads` is no job id (an id starts
with a letter or a digit), so the garbage collector's staged-input pass never takes it for a job. The record
`<prefix>upload:<ref>` says whose it is and expires after JOBQUEUE_API_UPLOAD_TTL_SECONDS; an object whose record
is gone (never submitted, or expired) is removed by the manager's garbage collector (`staged_uploads`).
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime, timedelta

import pyarrow.fs as pafs
from pydantic import BaseModel, ConfigDict
from redis.asyncio import Redis

from jobqueue.capped_records import CappedRecords
from jobqueue.errors import QuotaExceededError
from jobqueue.keys import Keys
from jobqueue.storage import Storage, from_path_component, path_component

UPLOADS_FOLDER = "_uploads"
OBJECT_NAME = "input"
REF_PATTERN = r"^up_[0-9a-f]{32}$"
_REF = re.compile(REF_PATTERN)


def new_ref() -> str:
    return f"up_{secrets.token_hex(16)}"


def is_ref(text: str) -> bool:
    return bool(_REF.match(text))


def uploads_root(staging: str, environment: str) -> str:
    """`<staging>/<environment>/_uploads`: every owner's staged uploads in one environment."""
    return f"{staging.rstrip('/')}/{path_component(environment)}/{UPLOADS_FOLDER}"


def upload_uri(staging: str, environment: str, owner: str, ref: str) -> str:
    if not is_ref(ref):
        raise ValueError(f"{ref!r} is not an upload reference")
    return f"{uploads_root(staging, environment)}/{path_component(owner)}/{ref}/{OBJECT_NAME}"


class StagedUpload(BaseModel):
    """One upload reference: whose it is, where its object goes, what it may hold, until when."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ref: str
    owner: str
    team: str | None
    uri: str
    content_type: str
    size: int
    created_at: datetime
    expires_at: datetime


QUOTA = "max_pending_uploads_per_owner"


class UploadStore:
    """Upload records in Redis (`Keys.upload`), and each owner's references not yet taken (`Keys.uploads_of`), up to
    `max_per_owner` at once (0: no limit). It writes no job state."""

    def __init__(self, redis: Redis, keys: Keys, staging: str, environment: str, ttl_seconds: int,
                 max_per_owner: int = 0) -> None:
        self.redis, self.keys = redis, keys
        self.staging, self.environment, self.ttl = staging, environment, ttl_seconds
        self.max_per_owner = max_per_owner
        self._capped = CappedRecords(redis)

    async def create(self, owner: str, team: str | None, size: int, content_type: str,
                     now: datetime | None = None) -> StagedUpload:
        """A new reference of `owner`; `QuotaExceededError` when they hold `max_per_owner` already."""
        now = now or datetime.now(UTC)
        ref = new_ref()
        upload = StagedUpload(ref=ref, owner=owner, team=team, uri=upload_uri(self.staging, self.environment, owner,
                              ref), content_type=content_type, size=size, created_at=now,
                              expires_at=now + timedelta(seconds=self.ttl))
        stored, held = await self._capped.store(self.keys.upload(ref), upload.model_dump_json(),
                                                self.keys.uploads_of(owner), ref, self.ttl * 1000,
                                                self.max_per_owner, now_ms=int(now.timestamp() * 1000))
        if not stored:
            raise QuotaExceededError(
                f"{owner} holds {held} upload references not yet submitted, the most one owner may "
                f"(JOBQUEUE_QUOTA_MAX_PENDING_UPLOADS_PER_OWNER={self.max_per_owner}); submit them (POST "
                f"/v1/jobs?upload=<ref>) or let them expire ({self.ttl} s after their creation), or ask an operator "
                "to raise the quota; nothing was staged", quota=QUOTA, subject=owner, limit=self.max_per_owner,
                current=held)
        return upload

    async def take(self, ref: str, owner: str) -> StagedUpload | None:
        """The upload `ref` of `owner`, claimed: a second take finds nothing. None when there is no such
        reference, it expired, was taken, or is another owner's (who may not learn that it exists)."""
        if not is_ref(ref):
            return None
        raw = await self.redis.get(self.keys.upload(ref))
        if raw is None:
            return None
        upload = StagedUpload.model_validate_json(raw)
        if upload.owner != owner:
            return None
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self.keys.upload(ref))
            pipe.zrem(self.keys.uploads_of(owner), ref)
            deleted, _ = await pipe.execute()
        if not deleted:  # another submit took it first
            return None
        return upload

    async def give_back(self, upload: StagedUpload, now: datetime | None = None) -> None:
        """Make a taken reference usable again for the rest of its life (a submit refused before its job)."""
        left = (upload.expires_at - (now or datetime.now(UTC))).total_seconds()
        if left >= 0.001:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.set(self.keys.upload(upload.ref), upload.model_dump_json(), px=int(left * 1000), nx=True)
                pipe.zadd(self.keys.uploads_of(upload.owner), {upload.ref: upload.expires_at.timestamp() * 1000})
                pipe.pexpire(self.keys.uploads_of(upload.owner), self.ttl * 1000)  # outlives every member
                await pipe.execute()

    async def exists(self, refs: list[str]) -> list[bool]:
        if not refs:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for ref in refs:
                pipe.exists(self.keys.upload(ref))
            return [bool(n) for n in await pipe.execute()]


def staged_upload_folders(storage: Storage) -> list[tuple[str, str, float]]:
    """(reference, folder URI, last modified epoch seconds) of every staged upload folder of this environment,
    sorted by reference: what the garbage collector looks at. A folder that is no reference is left out."""
    s = storage.settings
    root = uploads_root(s.staging, s.environment)
    fs, path = storage.resolve(root)
    found: dict[str, tuple[str, float]] = {}
    for info in fs.get_file_info(pafs.FileSelector(path, allow_not_found=True, recursive=True)):
        parts = info.path[len(path):].strip("/").split("/")
        if len(parts) < 2 or from_path_component(parts[0]) is None or not is_ref(parts[1]):
            continue
        folder = f"{root}/{parts[0]}/{parts[1]}"
        mtime = info.mtime.timestamp() if info.mtime is not None else 0.0
        found[parts[1]] = (folder, max(mtime, found.get(parts[1], ("", 0.0))[1]))
    return sorted((ref, folder, mtime) for ref, (folder, mtime) in found.items())


def delete_upload_folder(storage: Storage, folder: str) -> None:
    fs, path = storage.resolve(folder)
    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        fs.delete_dir(path)
