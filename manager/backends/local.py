"""Local backend: consumers as child processes of the manager, for one machine without Kubernetes.

Scale-down is graceful: SIGTERM makes a consumer stop taking jobs and finish the running ones.
Idle consumers (or ones still starting) are stopped before any other; busy ones never.
Children drain by themselves if the manager dies (`JOBQUEUE_CONSUMER_EXIT_WITH_PARENT`).
Each consumer's output goes to `<home>/logs/<consumer_id>.log`.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from consumer.resources import physical_memory_bytes
from jobqueue.groups import ResourceGroup
from jobqueue.logs import get_logger
from jobqueue.settings import Settings
from manager.backends.base import OomKill
from manager.backends.local_memory import ConsumerMemory
from manager.observe import GroupObservation

log = get_logger("jobqueue.manager.local")


@dataclass
class LocalConsumer:
    consumer_id: str
    group: str
    process: subprocess.Popen[bytes]
    started_at: float = field(default_factory=time.time)
    stopping: bool = False

    @property
    def pid(self) -> int:
        return self.process.pid


class LocalBackend:
    name = "local"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.consumers: dict[str, LocalConsumer] = {}
        self._ids = itertools.count(1)
        self.log_dir = settings.home / "logs"
        self.unexpected_exits = 0  # consumers that exited without being told to (crash, kill -9, OOM)
        self.memory = ConsumerMemory(settings, physical_memory_bytes())  # limits, cgroups, OOM kills

    async def start(self) -> None:
        """Nothing to warm up: the consumers are this process's children."""

    def _reap(self) -> None:
        for cid, c in list(self.consumers.items()):
            code = c.process.poll()
            if code is not None:
                del self.consumers[cid]
                self.memory.exited(cid, c.group, c.pid, code)
                self.unexpected_exits += not c.stopping
                level = log.info if c.stopping or code == 0 else log.warning
                level("consumer exited", consumer_id=cid, group=c.group, pid=c.pid, exit_code=code)

    def active(self, group: str) -> list[LocalConsumer]:
        self._reap()
        return [c for c in self.consumers.values() if c.group == group and not c.stopping]

    async def current_replicas(self, group: str) -> int:
        return len(self.active(group))

    def managed_groups(self) -> set[str]:
        self._reap()
        return {c.group for c in self.consumers.values() if not c.stopping}

    async def converge(self, group: ResourceGroup, replicas: int, observed: GroupObservation) -> None:
        active = self.active(group.name)
        if replicas > len(active):
            for _ in range(replicas - len(active)):
                self._spawn(group)
        else:
            self._stop_idle(active, replicas, observed)

    async def retire(self, group: str, replicas: int, observed: GroupObservation) -> None:
        self._stop_idle(self.active(group), replicas, observed)

    def _stop_idle(self, active: list[LocalConsumer], replicas: int, observed: GroupObservation) -> None:
        if replicas < len(active):
            registered = {c.consumer_id for c in observed.consumers}
            idle = [c for c in active if c.consumer_id not in observed.busy_ids]
            # never-registered (still starting) first, then idle ones, youngest first
            idle.sort(key=lambda c: (c.consumer_id in registered, -c.started_at))
            for c in idle[: len(active) - replicas]:
                self._stop(c)

    def _spawn(self, group: ResourceGroup) -> LocalConsumer:
        consumer_id = f"{group.name}-{os.getpid()}-{next(self._ids)}"
        memory_env, join_cgroup = self.memory.prepare(consumer_id, group)
        env = {
            **os.environ,
            **self.settings.to_env(),
            **memory_env,
            **group.consumer_env(),
            "JOBQUEUE_CONSUMER_ID": consumer_id,
            "JOBQUEUE_CONSUMER_EXIT_WITH_PARENT": "true",
        }
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{consumer_id}.log", "ab") as out:
            def popen(preexec: Callable[[], None] | None) -> subprocess.Popen[bytes]:
                return subprocess.Popen(
                    [sys.executable, "-m", "consumer", "--resource-group", group.name,
                     "--max-jobs", str(group.jobs_per_consumer)],
                    env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True, preexec_fn=preexec,
                )
            process = self.memory.start(consumer_id, group, join_cgroup, popen)
        c = LocalConsumer(consumer_id, group.name, process)
        self.consumers[consumer_id] = c
        log.info("consumer started", consumer_id=consumer_id, group=group.name, pid=process.pid)
        return c

    def pending_oom_kills(self) -> list[OomKill]:
        self._reap()
        return self.memory.pending_kills

    async def oom_killed(self, consumer_ids: set[str]) -> list[OomKill]:
        """Every OOM kill of a child is seen when it exits (`pending_oom_kills`): nothing to look up."""
        return []

    def _stop(self, c: LocalConsumer) -> None:
        c.stopping = True
        try:
            c.process.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            return
        log.info("consumer stopping (drain)", consumer_id=c.consumer_id, group=c.group, pid=c.pid)

    async def aclose(self, timeout: float | None = None) -> None:
        """SIGTERM every consumer, wait for them to drain, SIGKILL what is left after `timeout`."""
        for c in list(self.consumers.values()):
            if not c.stopping:
                self._stop(c)
        deadline = time.monotonic() + (self.settings.consumer_drain_seconds + 5 if timeout is None else timeout)
        while self.consumers and time.monotonic() < deadline:
            self._reap()
            await asyncio.sleep(0.05)
        for c in self.consumers.values():
            log.warning("consumer did not drain in time; killing", consumer_id=c.consumer_id, pid=c.pid)
            c.process.kill()
            c.process.wait()
        self.consumers.clear()
