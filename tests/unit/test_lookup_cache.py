"""`LookupCache`: with 0 seconds every call loads; else a value is reused until it is `seconds` old, calls that
find it expired share one load, a failed load is not kept, and `forget` loads again at once. And
`load_groups_cached` parses a groups file again only when it changed."""

from __future__ import annotations

import asyncio
import os
import time

import pytest
import yaml

from jobqueue.groups import load_groups_cached
from jobqueue.lookup_cache import LookupCache


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Loader:
    def __init__(self) -> None:
        self.calls = 0
        self.gate: asyncio.Event | None = None
        self.fail = False

    async def __call__(self) -> int:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise ConnectionError("redis is away")
        return self.calls


async def test_zero_seconds_loads_every_time():
    cache, load = LookupCache(0.0), Loader()
    assert [await cache.get("x", load) for _ in range(3)] == [1, 2, 3]


async def test_reused_until_it_is_seconds_old_and_forget_loads_again():
    clock, load = Clock(), Loader()
    cache = LookupCache(1.0, clock)
    assert await cache.get("x", load) == 1
    clock.now += 0.99
    assert await cache.get("x", load) == 1
    clock.now += 0.01
    assert await cache.get("x", load) == 2  # fresh data once the time is up
    cache.forget("x")
    assert await cache.get("x", load) == 3  # and at once after forget
    other = Loader()
    assert await cache.get("y", other) == 1 and await cache.get("x", load) == 3  # names are apart


async def test_calls_in_flight_share_one_load():
    cache, load = LookupCache(1.0, Clock()), Loader()
    load.gate = asyncio.Event()
    waiting = [asyncio.ensure_future(cache.get("x", load)) for _ in range(20)]
    await asyncio.sleep(0)
    load.gate.set()
    assert await asyncio.gather(*waiting) == [1] * 20 and load.calls == 1


async def test_a_failed_load_is_not_kept():
    cache, load = LookupCache(1.0, Clock()), Loader()
    load.gate, load.fail = asyncio.Event(), True
    first = asyncio.ensure_future(cache.get("x", load))
    second = asyncio.ensure_future(cache.get("x", load))  # waits for the first load, then tries its own
    await asyncio.sleep(0)
    load.gate.set()
    for call in (first, second):
        with pytest.raises(ConnectionError):
            await call
    load.fail = False
    assert await cache.get("x", load) == 3


def test_groups_file_parsed_again_when_it_changes(tmp_path):
    path, old = tmp_path / "groups.yaml", time.time() - 3600
    path.write_text(yaml.safe_dump({"resource_groups": {"default": {}, "gpu": {}}}))
    os.utime(path, (old, old))  # old enough to be kept
    assert sorted(load_groups_cached(path)) == ["default", "gpu"]
    assert sorted(load_groups_cached(path)) == ["default", "gpu"]
    path.write_text(yaml.safe_dump({"resource_groups": {"default": {}, "cpu": {}}}))  # same size...
    os.utime(path, (old, old))  # ...and the same mtime: its ctime tells
    assert sorted(load_groups_cached(path)) == ["cpu", "default"]
    path.write_text(yaml.safe_dump({"resource_groups": {"default": {}, "abc": {}}}))  # just written: not kept
    assert sorted(load_groups_cached(path)) == ["abc", "default"]
    path.write_text(yaml.safe_dump({"resource_groups": {"default": {}, "xyz": {}}}))
    assert sorted(load_groups_cached(path)) == ["default", "xyz"]
