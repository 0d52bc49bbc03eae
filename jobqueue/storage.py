"""Staging and result storage: Parquet files under a root that is a local dir or a pyarrow URI.

The SDK stages a query's input at `<staging>/<job_id>/input.parquet`; consumers write results
to `<results>/<job_id>/result.parquet`. Job ids are validated, so a path never leaves its root.
Writes go to a temporary name and are renamed (local) or uploaded whole (object stores), so a
reader never sees half a file.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9:_.-]{0,199}$")


def is_local(root: str) -> bool:
    return "://" not in root or root.startswith("file://")


def job_uri(root: str, job_id: str, filename: str) -> str:
    """`<root>/<job_id>/<filename>`, refusing ids that could escape the root."""
    if not _SAFE_ID.match(job_id) or ".." in job_id:
        raise ValueError(f"job id {job_id!r} is not a safe path component")
    return f"{root.rstrip('/')}/{job_id.replace(':', '_')}/{filename}"


def local_path(uri: str) -> Path:
    return Path(uri.removeprefix("file://"))


def write_table(table: pa.Table, uri: str) -> int:
    """Write `table` as Parquet at `uri`; returns bytes written."""
    if is_local(uri):
        path = local_path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
        return path.stat().st_size
    fs, path = pafs.FileSystem.from_uri(uri)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as out:
        pq.write_table(table, out, compression="zstd")
    return int(fs.get_file_info(path).size or 0)


def read_table(uri: str) -> pa.Table:
    if is_local(uri):
        return pq.read_table(local_path(uri))
    fs, path = pafs.FileSystem.from_uri(uri)
    return pq.read_table(path, filesystem=fs)


def upload_file(local: Path, uri: str) -> None:
    """Place a finished local file at `uri` (rename when local, upload otherwise)."""
    if is_local(uri):
        dest = local_path(uri)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(local, dest)
        return
    fs, path = pafs.FileSystem.from_uri(uri)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    pafs.copy_files(str(local), path, destination_filesystem=fs)
    local.unlink()


def delete_job_dir(root: str, job_id: str) -> None:
    """Remove `<root>/<job_id>/` if present (staged input after the job ends)."""
    uri = job_uri(root, job_id, "x").rsplit("/", 1)[0]
    if is_local(uri):
        shutil.rmtree(local_path(uri), ignore_errors=True)
        return
    fs, path = pafs.FileSystem.from_uri(uri)
    fs.delete_dir_contents(path, missing_dir_ok=True)
