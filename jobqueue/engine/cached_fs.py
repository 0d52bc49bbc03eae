"""A read-only pyarrow filesystem that reads an object store through the scan cache, counting what it reads.

`cached_filesystem(base, cache, stats)` wraps e.g. pyarrow's S3FileSystem. Listing and metadata go
to `base`; every byte read from a file goes through `BlockCache.read` (or, with `cache=None`,
straight to `base`), so DuckDB's projection and filter pushdown (it asks for column chunks, not whole
files) still decide which bytes are fetched. Each read adds its length to `stats.bytes_read`: the
object-store bytes a query read, whether they came from the cache or the store.
An object's identity is its path, modification time and size: Iceberg data files are immutable,
and an overwritten Parquet object gets a new modification time (pyarrow exposes no ETag).
"""

from __future__ import annotations

import io
import threading
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from jobqueue.engine.scan_cache import BlockCache, ScanStats, object_key


class CachedInputFile(io.RawIOBase):
    def __init__(self, base: pafs.FileSystem, path: str, info: pafs.FileInfo, cache: BlockCache | None,
                 stats: ScanStats) -> None:
        self.base, self.path, self.cache, self.stats = base, path, cache, stats
        self.size = int(info.size)
        version = str(info.mtime_ns) if info.mtime_ns is not None else ""
        self.key = object_key(f"{base.type_name}://{path}", version, self.size)
        self.position = 0
        self._remote: Any = None
        self._remote_lock = threading.Lock()

    def _fetch(self, offset: int, length: int) -> bytes:
        with self._remote_lock:
            if self._remote is None:
                self._remote = self.base.open_input_file(self.path)
            remote = self._remote
        data = remote.read_at(length, offset)
        return data if isinstance(data, bytes) else data.to_pybytes()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def tell(self) -> int:
        return self.position

    def read(self, size: int = -1) -> bytearray:
        if size is None or size < 0:
            size = self.size - self.position
        if self.cache is not None:
            data = self.cache.read(self.key, self.size, self.position, size, self._fetch, self.stats)
        else:
            data = bytearray(self._fetch(self.position, max(0, min(size, self.size - self.position))))
        self.stats.add(bytes_read=len(data))
        self.position += len(data)
        return data

    def readall(self) -> bytes:
        return bytes(self.read(-1))

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if self._remote is not None:
            self._remote.close()
        super().close()


class CachedFileSystemHandler(pafs.FileSystemHandler):  # type: ignore[misc]  # pyarrow ships no types
    def __init__(self, base: pafs.FileSystem, cache: BlockCache | None, stats: ScanStats) -> None:
        self.base, self.cache, self.stats = base, cache, stats

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CachedFileSystemHandler) and other.base.equals(self.base) and other.cache is self.cache

    def __ne__(self, other: object) -> bool:
        return not self == other

    def get_type_name(self) -> str:
        return f"cached-{self.base.type_name}"

    def normalize_path(self, path: str) -> str:
        return str(self.base.normalize_path(path))

    def get_file_info(self, paths: list[str]) -> list[pafs.FileInfo]:
        return list(self.base.get_file_info(paths))

    def get_file_info_selector(self, selector: pafs.FileSelector) -> list[pafs.FileInfo]:
        return list(self.base.get_file_info(selector))

    def open_input_file(self, path: str) -> pa.NativeFile:
        (info,) = self.base.get_file_info([path])
        if info.type != pafs.FileType.File:
            raise FileNotFoundError(f"{self.base.type_name}://{path} does not exist")
        return pa.PythonFile(CachedInputFile(self.base, path, info, self.cache, self.stats), mode="r")

    def open_input_stream(self, path: str) -> pa.NativeFile:
        return self.open_input_file(path)

    def _read_only(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("the scan cache filesystem is read-only")

    create_dir = delete_dir = delete_dir_contents = delete_root_dir_contents = delete_file = _read_only
    move = copy_file = open_output_stream = open_append_stream = _read_only


def cached_filesystem(base: pafs.FileSystem, cache: BlockCache | None, stats: ScanStats) -> pafs.FileSystem:
    return pafs.PyFileSystem(CachedFileSystemHandler(base, cache, stats))
