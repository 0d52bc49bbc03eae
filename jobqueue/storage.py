"""Staging, results and source files: Parquet on a local disk or an object store (S3 via pyarrow).

The SDK stages a query's input at `<staging>/<job_id>/input.parquet`; consumers write results
to `<results>/<job_id>/result.parquet`. Job ids are validated, so a path never leaves its root,
and each job writes under its own prefix, so no job overwrites another's result. Writes go to a
temporary name and are renamed (local) or uploaded whole (object stores): a reader never sees
half a file, and a re-run replaces the result whole.

S3 endpoint, region and credentials come from settings (`JOBQUEUE_S3_*`), else from the usual
AWS environment and config files.
"""

from __future__ import annotations

import copy
import fnmatch
import os
import re
import shutil
import uuid
from collections.abc import Callable
from functools import cached_property
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from jobqueue.settings import Settings

_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9:_.-]{0,199}$")


def is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def local_path(uri: str) -> Path:
    return Path(uri.removeprefix("file://"))


def job_uri(root: str, job_id: str, filename: str) -> str:
    """`<root>/<job_id>/<filename>`, refusing ids that could escape the root."""
    if not _SAFE_ID.match(job_id) or ".." in job_id:
        raise ValueError(f"job id {job_id!r} is not a safe path component")
    return f"{root.rstrip('/')}/{job_id.replace(':', '_')}/{filename}"


class Storage:
    """File access for one set of settings: local paths, `s3://bucket/key` and other pyarrow URIs."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._wrap: Callable[[pafs.FileSystem], pafs.FileSystem] | None = None  # see reading_through
        self._wrapped: dict[str, pafs.FileSystem] = {}

    @cached_property
    def s3(self) -> pafs.S3FileSystem:
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
        if is_local(uri):
            return pafs.LocalFileSystem(), str(local_path(uri).absolute())
        if uri.startswith("s3://"):
            return self.s3, uri.removeprefix("s3://")
        return pafs.FileSystem.from_uri(uri)

    def write_table(self, table: pa.Table, uri: str) -> int:
        """Write `table` as Parquet at `uri`; returns bytes written."""
        if is_local(uri):
            path = local_path(uri)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
            pq.write_table(table, tmp, compression="zstd")
            os.replace(tmp, path)
            return path.stat().st_size
        fs, path = self.resolve(uri)
        with fs.open_output_stream(path) as out:  # object stores publish the object on close
            pq.write_table(table, out, compression="zstd")
        return int(fs.get_file_info(path).size or 0)

    def read_table(self, uri: str) -> pa.Table:
        fs, path = self.resolve(uri)
        return pq.read_table(path, filesystem=fs)

    def upload_file(self, local: Path, uri: str) -> None:
        """Place a finished local file at `uri` (rename when local, upload otherwise)."""
        if is_local(uri):
            dest = local_path(uri)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(local, dest)
            return
        fs, path = self.resolve(uri)
        pafs.copy_files(str(local), path, destination_filesystem=fs)
        local.unlink()

    def delete_job_dir(self, root: str, job_id: str) -> None:
        """Remove `<root>/<job_id>/` if present (staged input after the job ends)."""
        uri = job_uri(root, job_id, "x").rsplit("/", 1)[0]
        if is_local(uri):
            shutil.rmtree(local_path(uri), ignore_errors=True)
            return
        fs, path = self.resolve(uri)
        if fs.get_file_info(path).type != pafs.FileType.NotFound:
            fs.delete_dir(path)  # contents and the directory marker object

    def remove_job_files(self, job_id: str, result: bool = False) -> None:
        """Remove a finished job's staged input and, with `result`, its result folder (a job that did not
        succeed has at most an empty folder or a killed attempt's temporary file there)."""
        self.delete_job_dir(self.settings.staging, job_id)
        if result:
            self.delete_job_dir(self.settings.results, job_id)

    def job_ids(self, root: str) -> list[str]:
        """The ids of the jobs that have a folder under `root` (staging or results), sorted: what the garbage
        collector looks at. A folder name that does not decode to exactly one job id is left out, so it is
        never removed (today `_` stands for both `_` and `:`)."""
        fs, path = self.resolve(root)
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True, recursive=False))
        names = (i.base_name for i in infos if i.type == pafs.FileType.Directory)
        return sorted(n for n in names if "_" not in n and _SAFE_ID.match(n) and ".." not in n)

    def job_dir_modified(self, root: str, job_id: str) -> float | None:
        """When anything in `<root>/<job_id>/` last changed (epoch seconds), 0 when no time is known;
        None when the folder is gone."""
        fs, path = self.resolve(job_uri(root, job_id, "x").rsplit("/", 1)[0])
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
