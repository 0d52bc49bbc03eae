"""The scan cache on a real directory: exact bytes, the cap, corruption, restarts, the lock, scan resistance."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import textwrap

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobqueue.engine.scan_cache import BlockCache, ScanCacheLockedError, ScanStats, object_key, open_scan_cache

BLOCK = 64 << 10


class Remote:
    """An object store stand-in that counts ranged reads."""

    def __init__(self, data: bytes) -> None:
        self.data, self.reads, self.bytes = data, 0, 0

    def fetch(self, offset: int, length: int) -> bytes:
        self.reads += 1
        self.bytes += length
        return self.data[offset:offset + length]


def blob(n: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(n)


OBJECTS = {f"s3://b/{n}": blob(int(size), seed=n) for n, size in enumerate((10.5 * BLOCK, 3 * BLOCK + 7))}


@pytest.fixture
def cache(tmp_path):
    c = BlockCache(tmp_path / "cache", capacity_bytes=20 * BLOCK, block_size=BLOCK)
    yield c
    c.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(reads=st.lists(st.tuples(st.integers(0, 12 * BLOCK), st.integers(0, 5 * BLOCK)), min_size=1, max_size=12))
def test_random_ranges_return_exactly_the_objects_bytes_and_the_cap_holds(cache, reads):
    objects = OBJECTS
    remotes = {uri: Remote(data) for uri, data in objects.items()}
    for i, (offset, length) in enumerate(reads):
        uri = list(objects)[i % 2]
        data = objects[uri]
        got = cache.read(object_key(uri, "v1", len(data)), len(data), offset, length, remotes[uri].fetch, ScanStats())
        assert got == data[offset:offset + length]
        assert cache.disk_bytes() <= cache.capacity and cache.used <= cache.capacity


def test_a_second_read_is_served_from_the_cache_and_adjacent_misses_are_one_read(cache):
    data = blob(8 * BLOCK)
    remote, key = Remote(data), object_key("s3://b/x", "v", len(data))
    first, second = ScanStats(), ScanStats()
    assert cache.read(key, len(data), 0, len(data), remote.fetch, first) == data
    assert remote.reads == 1 and first.misses == 8 and first.bytes_from_remote == len(data)
    assert cache.read(key, len(data), 0, len(data), remote.fetch, second) == data
    assert remote.reads == 1 and second.hits == 8 and second.misses == 0 and second.bytes_from_cache == len(data)


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_block_is_detected_and_fetched_again(cache, damage):
    data = blob(3 * BLOCK)
    remote, key = Remote(data), object_key("s3://b/x", "v", len(data))
    cache.read(key, len(data), 0, len(data), remote.fetch, ScanStats())
    (victim,) = [p for p in cache.directory.glob("*/*.blk") if f".{1}." in p.name[32:40]]
    raw = bytearray(victim.read_bytes())
    if damage == "truncate":
        victim.write_bytes(raw[: len(raw) // 2])
    else:
        raw[100] ^= 0xFF
        victim.write_bytes(bytes(raw))
    stats = ScanStats()
    assert cache.read(key, len(data), 0, len(data), remote.fetch, stats) == data
    assert (stats.hits, stats.misses) == (2, 1) and remote.reads == 2


def test_a_restart_keeps_the_cache_and_removes_temp_files(tmp_path):
    data = blob(4 * BLOCK)
    remote, key = Remote(data), object_key("s3://b/x", "v", len(data))
    first = BlockCache(tmp_path / "c", 20 * BLOCK, BLOCK)
    first.read(key, len(data), 0, len(data), remote.fetch, ScanStats())
    first.close()
    leftover = next((tmp_path / "c").glob("*/")) / ".half-written.tmp"
    leftover.write_bytes(b"x")
    second = BlockCache(tmp_path / "c", 20 * BLOCK, BLOCK)
    try:
        stats = ScanStats()
        assert second.read(key, len(data), 0, len(data), remote.fetch, stats) == data
        assert stats.hits == 4 and remote.reads == 1 and not leftover.exists()
    finally:
        second.close()


def test_the_directory_lock_is_exclusive_across_processes(cache):
    probe = textwrap.dedent(f"""
        from jobqueue.engine.scan_cache import BlockCache, ScanCacheLockedError
        try:
            BlockCache({str(cache.directory)!r}, {cache.capacity}, {cache.block_size})
        except ScanCacheLockedError as e:
            print("LOCKED", e)
    """)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                         cwd=os.getcwd(), check=True)
    assert out.stdout.startswith("LOCKED") and "in use by another process" in out.stdout, out
    with pytest.raises(ScanCacheLockedError, match="JOBQUEUE_TABLE_SCAN_CACHE_ON_LOCKED=uncached"):
        BlockCache(cache.directory, cache.capacity, cache.block_size)  # a second holder in-process too


def test_repeated_scans_of_twice_the_cap_keep_hitting(tmp_path):
    """Scan resistance: plain LRU would get ~0 hits here (every block is evicted before it comes back)."""
    cache = BlockCache(tmp_path / "c", 20 * BLOCK, BLOCK)
    try:
        files = [(object_key(f"s3://b/{i}", "v", 4 * BLOCK), Remote(blob(4 * BLOCK, seed=i))) for i in range(10)]
        for _ in range(2):  # warm-up passes
            for key, remote in files:
                cache.read(key, 4 * BLOCK, 0, 4 * BLOCK, remote.fetch, ScanStats())
        stats = ScanStats()
        for key, remote in files:
            assert cache.read(key, 4 * BLOCK, 0, 4 * BLOCK, remote.fetch, stats) == remote.data
        assert stats.hits / (stats.hits + stats.misses) >= 0.4, stats
        assert cache.disk_bytes() <= cache.capacity
    finally:
        cache.close()


def test_a_locked_directory_fails_the_consumer_or_runs_it_uncached_by_setting(tmp_path):
    from jobqueue.settings import Settings

    settings = Settings(spill_directory=tmp_path / "spill", table_scan_cache_bytes="64MiB")
    first = open_scan_cache(settings)
    try:
        assert first is not None and first.directory == tmp_path / "spill" / "table_scan_cache"
        with pytest.raises(ScanCacheLockedError, match="in use by another process"):
            open_scan_cache(settings)
        assert open_scan_cache(settings.model_copy(update={"table_scan_cache_on_locked": "uncached"})) is None
        assert open_scan_cache(settings.model_copy(update={"table_scan_cache_bytes": 0})) is None
    finally:
        first.close()


def test_a_cache_larger_than_the_free_space_is_warned_about_with_both_numbers(tmp_path):
    cache = BlockCache(tmp_path / "c", capacity_bytes=1 << 60, block_size=BLOCK)
    try:
        free = shutil.disk_usage(tmp_path).free
        warning = cache.free_space_warning()
        assert warning is not None and str(1 << 60) in warning and "bytes free" in warning
        assert abs(int(warning.split(" has ")[1].split(" bytes")[0]) - free) < (64 << 20)
    finally:
        cache.close()
    small = BlockCache(tmp_path / "d", capacity_bytes=20 * BLOCK, block_size=BLOCK)
    try:
        assert small.free_space_warning() is None
    finally:
        small.close()
