"""Test helpers: bounded waits on a condition (never a bare sleep) and a running manager."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import redis
import yaml

from jobqueue.groups import load_groups
from jobqueue.keys import Keys
from jobqueue.models import ConsumerInfo
from jobqueue.settings import Settings
from manager.backends.local import LocalBackend
from manager.runner import run_manager


def free_port() -> int:
    """A loopback port nothing listens on (at the moment of asking)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bindable(port: int) -> bool:
    """Whether loopback `port` is free (at the moment of asking)."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_for_redis(url: str, process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """Block until the Redis server `process` answers PING at `url`; fail if it exits or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with redis.Redis.from_url(url) as client:
                client.ping()
            return
        except redis.ConnectionError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise
            time.sleep(0.05)


async def eventually(check: Callable[[], Any | Awaitable[Any]], timeout: float = 30.0, what: str = "") -> Any:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or check}")
        await asyncio.sleep(0.05)


def unraisable_after_own_loops(scenario: Callable[[int], Awaitable[None]], rounds: int) -> list[str]:
    """Run `scenario(round)` `rounds` times, each on an event loop of its own, closed as soon as it returns (as
    pytest-asyncio's may be), and collect garbage after each: what could not be raised meanwhile (the
    ResourceWarning of a socket left open), as text."""
    unraisable: list[str] = []
    hook, sys.unraisablehook = sys.unraisablehook, lambda u: unraisable.append(repr(u.exc_value))
    try:
        for round_ in range(rounds):
            loop = asyncio.new_event_loop()
            try:
                loop.run_until_complete(scenario(round_))
            finally:
                loop.close()
            gc.collect()
    finally:
        sys.unraisablehook = hook
    return unraisable


async def consumers_registered(redis: Any, keys: Keys, group: str, count: int, timeout: float = 30.0) -> None:
    """Wait until `count` consumers of `group` have registered: each one's arq worker is about to poll its queue,
    so a job submitted now starts at once."""
    async def registered() -> bool:
        return bool(await redis.hlen(keys.consumers(group)) == count)

    await eventually(registered, timeout=timeout, what=f"{count} consumer(s) of {group!r} registered")


@contextlib.contextmanager
def frozen(pid: int) -> Iterator[None]:
    """The process is stopped (SIGSTOP) while the block runs, as a starved or paused machine would stop it: a
    test holds a consumer mid-query this way, however fast the machine runs the query."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def with_groups(settings: Settings, tmp_path: Path, groups: dict[str, dict[str, Any]], **extra: Any) -> Settings:
    path = tmp_path / "groups.yaml"
    path.write_text(yaml.safe_dump({"resource_groups": groups}))
    return settings.model_copy(update={"resource_groups_path": path, **extra})


@contextlib.asynccontextmanager
async def running_manager(settings: Settings) -> AsyncIterator[LocalBackend]:
    """The real manager loop with the local backend, in this event loop; drains on exit."""
    backend = LocalBackend(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_manager(settings, stop, groups=load_groups(settings.resource_groups_path), backend=backend)
    )
    try:
        yield backend
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


# Queue load and busy consumers in the wire format (jobqueue/keys.py), for driving the manager by hand.
async def queue(redis, keys: Keys, group: str, n: int, start: int = 0) -> None:
    now_ms = int(time.time() * 1000)
    await redis.zadd(keys.queue(group), {f"{group}-job-{i}": now_ms for i in range(start, start + n)})


async def mark_busy(redis, keys: Keys, group: str, pod: str, job: str) -> None:
    now = time.time()
    info = ConsumerInfo(consumer_id=pod, resource_group=group, host=pod, pid=1, started_at=now, seen_at=now,
                        running=[job])
    await redis.zadd(keys.queue(group), {keys.arq_id(job): int(now * 1000)})  # arq keeps running jobs queued
    await redis.hset(keys.consumers(group), pod, info.model_dump_json())
    await redis.hset(keys.running(group), job, pod)
    await redis.set(keys.heartbeat(job), "1", ex=60)


@contextlib.asynccontextmanager
async def worker_running(settings: Settings, group: str = "default", max_jobs: int = 1,
                         **options: Any) -> AsyncIterator[Any]:
    """An in-process consumer (arq worker) on `group` while the block runs; stopped once its jobs are done."""
    from consumer.worker import build_worker

    worker = build_worker(settings, group, max_jobs=max_jobs, **options)
    task = asyncio.create_task(worker.async_run())
    try:
        yield worker
    finally:
        await stop_worker(worker, task)


async def stop_worker(worker: Any, task: asyncio.Task[Any]) -> None:
    """Stop an in-process arq worker once its job tasks are done: arq's `close()` cancels unfinished job
    tasks and re-raises their CancelledError before it closes its Redis pool."""
    await eventually(lambda: all(t.done() for t in worker.tasks.values()), timeout=30, what="the worker's jobs")
    await worker.close()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
