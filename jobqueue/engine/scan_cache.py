"""The table-scan SSD cache: object-store bytes kept on local NVMe in fixed-size blocks.

- **Blocks.** An object is cut into `block_size` blocks (4 MiB). Each cached block is one file,
  `<k[:2]>/<k>.<index>.<length>.<crc32>.blk` where `k` hashes the object's identity (URI, version,
  size), written to a temp name and renamed. Its size is checked on every read and its CRC-32 on
  its first read in a process; a block that fails is deleted and fetched again, never served. Reads
  after the first take only the bytes asked for from the block file.
- **Fetching.** The missing blocks of a read are merged into runs of adjacent blocks; each run is
  one ranged read, and the runs are fetched in parallel.
- **Admission and eviction (scan-resistant).** When a new block does not fit, blocks are evicted
  least-recently-used first, in a batch down to 90% of the cap, so the cap is never exceeded; but
  only blocks requested less often than the newcomer may go (request counts are kept per block,
  halved periodically so they age, as in TinyLFU). If those cannot make room, the newcomer is not
  admitted. A scan bigger than the cap therefore does not flush the cache: plain LRU gets ~0.15
  hits on repeated scans of twice the cap; this keeps roughly what fits.
- **Restarts.** The index is rebuilt from the directory at startup (LRU order by file mtime) and
  leftover temp files are deleted, so a restarted consumer keeps its warm cache.
- **Exclusive.** The process holds a non-blocking `flock` on `<dir>/.lock` for its lifetime: two
  consumers never share a cache directory (the local backend gives each consumer slot its own).
- **Reserved.** `open_scan_cache` reserves the cache's size in its volume's space ledger
  (`jobqueue.engine.disk_space`), next to the queries' spill; a cache the volume cannot hold is shrunk.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from jobqueue.engine.disk_space import reserve_cache
from jobqueue.logs import get_logger
from jobqueue.settings import Settings

log = get_logger("jobqueue.consumer.scan_cache")
BLOCK_SIZE = 4 << 20
LOW_WATER = 0.9
FETCH_THREADS = 8


class ScanCacheLockedError(RuntimeError):
    """Another process holds the cache directory."""


@dataclass
class ScanStats:
    """What one query's reads did with the cache (blocks and bytes), and the bytes they returned."""

    bytes_read: int = 0  # object-store bytes handed to the query, from the cache or the store (or no cache)
    hits: int = 0
    misses: int = 0
    bytes_from_cache: int = 0
    bytes_from_remote: int = 0
    evictions: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)


@dataclass(frozen=True)
class _Block:
    path: Path
    length: int


def object_key(uri: str, version: str, size: int) -> str:
    """The identity of an object's bytes: a new version or size is a new object."""
    return hashlib.sha256(f"{uri}\0{version}\0{size}".encode()).hexdigest()[:32]


class BlockCache:
    def __init__(self, directory: Path, capacity_bytes: int, block_size: int = BLOCK_SIZE,
                 admission: bool = True) -> None:
        """`admission=False` gives plain LRU (for comparison in bench/scan_cache.py)."""
        if capacity_bytes < block_size:
            raise ValueError(f"scan cache capacity {capacity_bytes} is below one block ({block_size} bytes)")
        self.directory = Path(directory)
        self.capacity = capacity_bytes
        self.block_size = block_size
        self.admission = admission
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(self.directory / ".lock", "a+")  # noqa: SIM115 - held for the process's life
        try:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise ScanCacheLockedError(
                f"scan cache directory {self.directory} is in use by another process; give each consumer its own "
                "JOBQUEUE_TABLE_SCAN_CACHE_DIRECTORY (the local backend does, per consumer slot), or set "
                "JOBQUEUE_TABLE_SCAN_CACHE_ON_LOCKED=uncached") from None
        self._mutex = threading.Lock()
        self._index: OrderedDict[tuple[str, int], _Block] = OrderedDict()  # LRU first
        self._freq: dict[tuple[str, int], int] = {}
        self._verified: set[tuple[str, int]] = set()
        self._touches = 0
        self.used = 0
        self._pool = ThreadPoolExecutor(FETCH_THREADS, thread_name_prefix="scan-cache-fetch")
        self.on_close: list[Callable[[], None]] = []  # e.g. releasing its space reservation
        self.totals = ScanStats()  # every query's reads since the process started (the consumer's metrics)
        self._rebuild()

    # --- startup ------------------------------------------------------------------------------------
    def _rebuild(self) -> None:
        found: list[tuple[float, tuple[str, int], _Block]] = []
        for path in self.directory.glob("*/*"):
            if not path.name.endswith(".blk"):  # a temp file from a crash mid-write
                path.unlink(missing_ok=True)
                continue
            try:
                key, index, length, _crc = path.name[:-4].split(".")
                found.append((path.stat().st_mtime, (key, int(index)), _Block(path, int(length))))
            except (ValueError, OSError):
                path.unlink(missing_ok=True)
        for _, block_id, block in sorted(found, key=lambda f: f[0]):
            self._index[block_id] = block
            self._freq[block_id] = 1
            self.used += block.length
        if self.used > self.capacity:  # the cap was lowered since
            self.totals.add(evictions=self._evict_to(int(self.capacity * LOW_WATER)))
        log.info("scan cache ready", directory=str(self.directory), blocks=len(self._index), used_bytes=self.used,
                 capacity_bytes=self.capacity)

    def free_space_warning(self) -> str | None:
        free = shutil.disk_usage(self.directory).free + self.used
        if free < self.capacity:
            return (f"scan cache directory {self.directory} has {free} bytes free (with what the cache holds) but "
                    f"the cache is configured for {self.capacity} bytes (JOBQUEUE_TABLE_SCAN_CACHE_BYTES)")
        return None

    def shrink_to(self, capacity: int) -> None:
        """Lower the cap (the volume cannot hold the configured size), evicting what no longer fits."""
        with self._mutex:
            self.capacity = min(self.capacity, capacity)
            if self.used > self.capacity:
                self.totals.add(evictions=self._evict_to(int(self.capacity * LOW_WATER)))

    def close(self) -> None:
        for hook in self.on_close:
            hook()
        self._pool.shutdown(wait=True)
        with contextlib.suppress(OSError):
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)
        self._lock_file.close()

    def _count(self, stats: ScanStats, **counts: int) -> None:
        """Count cache events for the query (`stats`) and for the process (`totals`)."""
        stats.add(**counts)
        self.totals.add(**counts)

    # --- reads --------------------------------------------------------------------------------------
    def read(self, key: str, size: int, offset: int, length: int, fetch: Callable[[int, int], bytes],
             stats: ScanStats) -> bytearray:
        """`length` bytes at `offset` of the object `key` (`size` bytes); `fetch(offset, length)` reads the
        remote object. Returns exactly the object's bytes, read straight into one buffer."""
        end = min(size, offset + length)
        if offset >= end:
            return bytearray()
        out = bytearray(end - offset)
        view = memoryview(out)
        first, last = offset // self.block_size, (end - 1) // self.block_size
        missing: list[int] = []
        for index in range(first, last + 1):
            lo, hi = self._span(index, offset, end)
            at = index * self.block_size + lo - offset
            if self._get_into((key, index), lo, view[at:at + hi - lo]):
                self._count(stats, hits=1, bytes_from_cache=hi - lo)
            else:
                missing.append(index)
        if missing:
            for index, block in self._fetch(key, size, missing, fetch, stats).items():
                lo, hi = self._span(index, offset, end)
                at = index * self.block_size + lo - offset
                view[at:at + hi - lo] = block[lo:hi]
        return out

    def _span(self, index: int, offset: int, end: int) -> tuple[int, int]:
        """The part [lo, hi) of block `index` that the read [offset, end) covers."""
        base = index * self.block_size
        return max(offset, base) - base, min(end, base + self.block_size) - base

    def _get_into(self, block_id: tuple[str, int], lo: int, into: memoryview) -> bool:
        """Bytes [lo, lo + len(into)) of a cached block, read into `into`; False if it is not cached (or failed
        its check). Its size is checked on every read, its CRC-32 on the first read in this process (a block
        written here is checked too, on its first read back)."""
        with self._mutex:
            self._touch(block_id)
            block = self._index.get(block_id)
            if block is None:
                return False
            self._index.move_to_end(block_id)
            verified = block_id in self._verified
        found = -1
        try:
            fd = os.open(block.path, os.O_RDONLY)
            try:
                found = os.fstat(fd).st_size
                if found == block.length and verified:
                    return os.preadv(fd, [into], lo) == len(into)
                data = os.pread(fd, found, 0) if found == block.length else b""
            finally:
                os.close(fd)
        except OSError:
            data = b""
        crc = block.path.name[:-4].rsplit(".", 1)[-1]
        if len(data) != block.length or f"{zlib.crc32(data):08x}" != crc:
            log.warning("scan cache block failed its check; fetching it again", block=str(block.path),
                        expected_bytes=block.length, found_bytes=found)
            self._drop(block_id, block)
            return False
        with self._mutex:
            self._verified.add(block_id)
        into[:] = data[lo:lo + len(into)]
        return True

    def _touch(self, block_id: tuple[str, int]) -> None:
        """Count a request for the admission sketch; halve every count now and then, so it ages."""
        self._freq[block_id] = self._freq.get(block_id, 0) + 1
        self._touches += 1
        if self._touches >= 10 * max(64, self.capacity // self.block_size):
            self._touches = 0
            self._freq = {k: v // 2 for k, v in self._freq.items() if v > 1}

    def _fetch(self, key: str, size: int, missing: list[int], fetch: Callable[[int, int], bytes],
               stats: ScanStats) -> dict[int, bytes]:
        runs: list[list[int]] = []
        for index in missing:  # adjacent missing blocks become one ranged read
            if runs and runs[-1][-1] == index - 1:
                runs[-1].append(index)
            else:
                runs.append([index])

        def get(run: list[int]) -> tuple[list[int], bytes]:
            start = run[0] * self.block_size
            return run, fetch(start, min(size, (run[-1] + 1) * self.block_size) - start)

        results = list(self._pool.map(get, runs)) if len(runs) > 1 else [get(runs[0])]
        out: dict[int, bytes] = {}
        for run, data in results:
            for n, index in enumerate(run):
                block = data[n * self.block_size:(n + 1) * self.block_size]
                out[index] = block
                self._count(stats, misses=1, bytes_from_remote=len(block))
                self._admit(key, index, block, stats)
        return out

    # --- admission and eviction ---------------------------------------------------------------------
    def _admit(self, key: str, index: int, data: bytes, stats: ScanStats) -> None:
        block_id = (key, index)
        with self._mutex:
            if block_id in self._index:
                return
            if self.used + len(data) > self.capacity:
                victims = self._victims(block_id, len(data))
                if victims is None:
                    return  # only blocks requested at least as often would make room: not admitted
                for victim in victims:
                    self._remove(victim)
                self._count(stats, evictions=len(victims))
            self.used += len(data)  # reserved: the cap holds even while the file is written
        path = self.directory / key[:2] / f"{key}.{index}.{len(data)}.{zlib.crc32(data):08x}.blk"
        try:
            path.parent.mkdir(exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except OSError as e:
            with self._mutex:
                self.used -= len(data)
            log.warning("scan cache write failed; serving uncached", error=str(e))
            return
        with self._mutex:
            self._index[block_id] = _Block(path, len(data))

    def _victims(self, candidate: tuple[str, int], length: int) -> list[tuple[str, int]] | None:
        """Blocks to evict, least recently used first, down to LOW_WATER of the cap with room for `length`.
        With admission on, only blocks requested less often than `candidate` may go; None when those do
        not free enough for it at all. Call with the mutex held."""
        target = int(self.capacity * LOW_WATER) - length
        must_free = self.used + length - self.capacity
        wanted = self.used - max(0, target)
        limit = self._freq.get(candidate, 0)
        chosen: list[tuple[str, int]] = []
        freed = 0
        for block_id, block in self._index.items():
            if freed >= wanted:
                break
            if self.admission and self._freq.get(block_id, 0) >= limit:
                continue
            chosen.append(block_id)
            freed += block.length
        return chosen if freed >= must_free else None

    def _remove(self, block_id: tuple[str, int]) -> None:
        block = self._index.pop(block_id)
        self._verified.discard(block_id)
        self.used -= block.length
        block.path.unlink(missing_ok=True)

    def _evict_to(self, target: int) -> int:
        """Drop least-recently-used blocks until at most `target` bytes are used; call with the mutex held."""
        evicted = 0
        while self._index and self.used > max(0, target):
            self._remove(next(iter(self._index)))
            evicted += 1
        return evicted

    def _drop(self, block_id: tuple[str, int], block: _Block) -> None:
        with self._mutex:
            if self._index.get(block_id) == block:
                self._remove(block_id)
                return
        block.path.unlink(missing_ok=True)

    def disk_bytes(self) -> int:
        """Bytes of block files on disk (for checks: it never exceeds the capacity)."""
        return sum(p.stat().st_size for p in self.directory.glob("*/*.blk"))


def open_scan_cache(settings: Settings) -> BlockCache | None:
    """The consumer's cache per its settings: None when off, or when locked and `on_locked=uncached`."""
    if settings.table_scan_cache_bytes <= 0:
        return None
    try:
        cache = BlockCache(settings.scan_cache_root, settings.table_scan_cache_bytes)
    except ScanCacheLockedError as e:
        if settings.table_scan_cache_on_locked == "fail":
            raise
        log.warning("running without a scan cache", reason=str(e))
        return None
    warning = cache.free_space_warning()
    if warning:
        log.warning("scan cache larger than the free space", detail=warning)
    return _reserved(cache, settings)


def _reserved(cache: BlockCache, settings: Settings) -> BlockCache | None:
    """Reserve the cache's size in its volume's space ledger, shrinking it to what the volume can give."""
    reservation = reserve_cache(settings, cache.directory, cache.capacity)
    cache.on_close.append(reservation.release)
    if reservation.bytes < cache.capacity:
        log.warning("scan cache shrunk to the space its volume can give (JOBQUEUE_SPILL_RESERVE_BYTES kept free, "
                    "other caches' and queries' reservations counted)", directory=str(cache.directory),
                    configured_bytes=cache.capacity, granted_bytes=reservation.bytes)
        if reservation.bytes < cache.block_size:
            log.warning("running without a scan cache: less than one block of space", directory=str(cache.directory))
            cache.close()
            return None
        cache.shrink_to(reservation.bytes)
    return cache
