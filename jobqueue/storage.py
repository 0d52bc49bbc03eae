"""Staging, results and source files: Parquet on a local disk or an object store (S3 via pyarrow).

The SDK stages a query's input at `<staging>/<environment>/<job id>/input.parquet`; consumers
write results to `<results>/<environment>/<job id>/result.parquet`. The environment and the job
id are each encoded by `path_component`, which is injective (distinct ids never share a folder,
even on a case-insensitive file system) and never yields `/`, `..` or an empty name, so a path
never leaves its root and no job, in any environment sharing the bucket, overwrites another's
result. Writes go to a
temporary name and are renamed (local) or uploaded whole (object stores): a reader never sees
half a file, and a re-run replaces the result whole.

S3 endpoint, region and credentials come from settings (`JOBQUEUE_S3_*`), else from the usual
AWS environment and config files.
"""

from __future__ import annotations

import asyncio
import copy
import fnmatch
import os
import re
import shutil
import uuid
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote_to_bytes

from jobqueue.logs import get_logger
from jobqueue.settings import Settings
from jobqueue.sizes import INLINE_INPUT_BYTES

if TYPE_CHECKING:  # pyarrow is imported where it is used: a consumer reading local files never loads it (its RSS)
    import pyarrow as pa
    import pyarrow.dataset as pads
    import pyarrow.fs as pafs

log = get_logger("jobqueue.storage")
T = TypeVar("T")
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9:_.-]{0,199}$")
_KEPT = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_.-")


def is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def local_path(uri: str) -> Path:
    return Path(uri.removeprefix("file://"))


def path_component(name: str) -> str:
    """`name` as one path segment: lowercase letters, digits, `_`, `.` and `-` are kept, every other
    character becomes `%xx` per UTF-8 byte (lowercase hex). Injective, as `%` is never kept; the output
    has no uppercase letter, so it stays injective on case-insensitive file systems too."""
    return "".join(ch if ch in _KEPT else "".join(f"%{b:02x}" for b in ch.encode()) for ch in name)


def from_path_component(segment: str) -> str | None:
    """The name `path_component` encoded as `segment`; None when `segment` is not such an encoding (a folder
    someone else made), so that whoever lists folders never acts on a name that means two things."""
    try:
        name = unquote_to_bytes(segment).decode("utf-8")
    except UnicodeDecodeError:
        return None
    return name if path_component(name) == segment else None


def job_uri(root: str, environment: str, job_id: str, filename: str) -> str:
    """`<root>/<environment>/<job id>/<filename>` (both encoded), refusing ids that could escape the root."""
    if not _SAFE_ID.match(job_id) or ".." in job_id:
        raise ValueError(f"job id {job_id!r} is not a safe path component")
    if not _SAFE_ID.match(environment) or ".." in environment:
        raise ValueError(f"environment {environment!r} is not a safe path component")
    return f"{root.rstrip('/')}/{path_component(environment)}/{path_component(job_id)}/{filename}"


class Storage:
    """File access for one set of settings: local paths, `s3://bucket/key` and other pyarrow URIs."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._wrap: Callable[[pafs.FileSystem], pafs.FileSystem] | None = None  # see reading_through
        self._wrapped: dict[str, pafs.FileSystem] = {}

    @cached_property
    def s3(self) -> pafs.S3FileSystem:
        import pyarrow.fs as pafs

        s = self.settings
        options: dict[str, object] = {"region": s.s3_region} if s.s3_region else {}
        if s.s3_endpoint_url:
            scheme, _, host = s.s3_endpoint_url.partition("://")
            options.update(endpoint_override=host.rstrip("/"), scheme=scheme or "https")
        if s.s3_access_key_id and s.s3_secret_access_key:
            options.update(access_key=s.s3_access_key_id, secret_key=s.s3_secret_access_key.get_secret_value())
        return pafs.S3FileSystem(**options)

    def resolve(self, uri: str) -> tuple[pafs.FileSystem, str]:
        """(filesystem, path inside it) for a URI or local path."""
        import pyarrow.fs as pafs

        if is_local(uri):
            return pafs.LocalFileSystem(), str(local_path(uri).absolute())
        if uri.startswith("s3://"):
            return self.s3, uri.removeprefix("s3://")
        filesystem, path = pafs.FileSystem.from_uri(uri)
        return filesystem, str(path)

    def published(self, uri: str, write: Callable[[pa.NativeFile], T]) -> T:
        """`write(out)` as the new object at `uri`, seen whole or not at all: a local file is written beside it and
        renamed into place (removed if `write` fails); an object store publishes the object on close."""
        import pyarrow as pa

        if is_local(uri):
            path = local_path(uri)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
            try:
                with pa.OSFile(str(tmp), "wb") as out:
                    result = write(out)
                os.replace(tmp, path)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            return result
        fs, key = self.resolve(uri)
        with fs.open_output_stream(key) as out:
            return write(out)

    def write_table(self, table: pa.Table, uri: str) -> None:
        """Write `table` as Parquet at `uri` (`published`): zstd, but a small table (up to INLINE_INPUT_BYTES, a
        query input staged on the event loop) plain and without dictionaries, whose setup costs more than they save
        there (1,000 rows: 215 instead of 390 us)."""
        import pyarrow.parquet as pq

        small = table.nbytes <= INLINE_INPUT_BYTES
        options: dict[str, Any] = {"compression": "none", "use_dictionary": False} if small else {"compression": "zstd"}
        self.published(uri, lambda out: pq.write_table(table, out, **options))

    def read_table(self, uri: str) -> pa.Table:
        import pyarrow.parquet as pq

        fs, path = self.resolve(uri)
        return pq.read_table(path, filesystem=fs)

    def upload_file(self, local: Path, uri: str) -> None:
        """Place a finished local file at `uri` (rename when local, upload otherwise)."""
        if is_local(uri):
            dest = local_path(uri)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(local, dest)
            return
        import pyarrow.fs as pafs

        fs, path = self.resolve(uri)
        pafs.copy_files(str(local), path, destination_filesystem=fs)
        local.unlink()

    def job_dir(self, root: str, job_id: str) -> str:
        """`<root>/<environment>/<job id>` (encoded) of this environment: one job's folder."""
        return job_uri(root, self.settings.environment, job_id, "x").rsplit("/", 1)[0]

    def delete_job_dir(self, root: str, job_id: str) -> None:
        """Remove `<root>/<environment>/<job id>/` if present (staged input after the job ends)."""
        uri = self.job_dir(root, job_id)
        if is_local(uri):
            shutil.rmtree(local_path(uri), ignore_errors=True)
            return
        import pyarrow.fs as pafs

        fs, path = self.resolve(uri)
        if fs.get_file_info(path).type != pafs.FileType.NotFound:
            fs.delete_dir(path)  # contents and the directory marker object

    def remove_job_files(self, job_id: str, result: bool = False) -> None:
        """Remove a finished job's staged input and, with `result`, its result folder (a job that did not
        succeed has at most an empty folder or a killed attempt's temporary file there)."""
        self.delete_job_dir(self.settings.staging, job_id)
        if result:
            self.delete_job_dir(self.settings.results, job_id)

    async def discard_job_files(self, job_id: str, result: bool = False) -> None:
        """`remove_job_files` for a job that has just ended, from async code: inline when all it touches is on
        local disk (small), in a thread for object stores. A failure is logged, never raised: the manager's
        garbage collector removes what is left."""
        try:
            if is_local(self.settings.staging) and (not result or is_local(self.settings.results)):
                self.remove_job_files(job_id, result)
            else:
                await asyncio.to_thread(self.remove_job_files, job_id, result)
        except (OSError, ValueError) as e:  # ValueError: an id that is no path has no files
            log.warning("could not remove a finished job's files", job_id=job_id, error=str(e))

    def job_ids(self, root: str) -> list[str]:
        """The ids of this environment's jobs that have a folder under `root` (staging or results), sorted:
        what the garbage collector looks at. A folder name that is not the encoding of a valid job id is left
        out, so it is never removed; other environments' folders are never listed."""
        import pyarrow.fs as pafs

        fs, path = self.resolve(f"{root.rstrip('/')}/{path_component(self.settings.environment)}")
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True, recursive=False))
        ids = (from_path_component(i.base_name) for i in infos if i.type == pafs.FileType.Directory)
        return sorted(i for i in ids if i is not None and _SAFE_ID.match(i) and ".." not in i)

    def job_dir_modified(self, root: str, job_id: str) -> float | None:
        """When anything in `<root>/<environment>/<job id>/` last changed (epoch seconds), 0 when no time is
        known; None when the folder is gone."""
        import pyarrow.fs as pafs

        fs, path = self.resolve(self.job_dir(root, job_id))
        top = fs.get_file_info(path)
        if top.type == pafs.FileType.NotFound:
            return None
        infos = [top, *fs.get_file_info(pafs.FileSelector(path, allow_not_found=True, recursive=True))]
        times = [i.mtime.timestamp() for i in infos if i.mtime is not None]
        return max(times, default=0.0)

    def reading_through(self, wrap: Callable[[pafs.FileSystem], pafs.FileSystem]) -> Storage:
        """A view whose source reads from object stores go through `wrap` (the consumer's scan cache)."""
        view = copy.copy(self)
        view._wrap, view._wrapped = wrap, {}
        return view

    def resolve_source(self, uri: str) -> tuple[pafs.FileSystem, str]:
        """Like `resolve`, for reading a table source: through the scan cache when there is one."""
        fs, path = self.resolve(uri)
        if self._wrap is None or is_local(uri):
            return fs, path
        wrapped = self._wrapped.get(fs.type_name)
        if wrapped is None:
            wrapped = self._wrapped[fs.type_name] = self._wrap(fs)
        return wrapped, path

    def parquet_dataset(self, uri: str) -> pads.Dataset:
        """A Parquet dataset over a file, a directory or a glob (`*` in the last part) on any store."""
        import pyarrow.dataset as pads
        import pyarrow.fs as pafs

        fs, path = self.resolve_source(uri)
        directory, _, pattern = path.rpartition("/")
        if any(ch in pattern for ch in "*?["):
            infos = fs.get_file_info(pafs.FileSelector(directory, recursive=False))
            files = sorted(
                i.path for i in infos if i.type == pafs.FileType.File and fnmatch.fnmatch(i.base_name, pattern)
            )
            if not files:
                raise FileNotFoundError(f"no files match {uri}")
            return pads.dataset(files, filesystem=fs, format="parquet")
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise FileNotFoundError(f"{uri} does not exist")
        return pads.dataset(path, filesystem=fs, format="parquet")
