"""The local backend's memory policy: how much each consumer gets, how it is enforced, and its OOM kills.

- A group's `memory` is each of its consumers' limit. Without it a consumer gets
  `JOBQUEUE_LOCAL_MEMORY_SHARE_PERCENT` of physical RAM divided by the group's `max_instances`, so
  the group's consumers fit the machine together. The consumer is told its limit
  (`JOBQUEUE_CONTAINER_MEMORY_BYTES`) and sizes DuckDB's `memory_limit` as a percent of it.
- The limit is enforced with a memory cgroup per consumer (`local_cgroup`). Where none can be made,
  the consumer runs without enforcement (DuckDB's `memory_limit` still applies to what DuckDB
  allocates) and one warning per group says why.
- When a consumer exits on SIGKILL and its cgroup counted an OOM kill, the kill is kept for the
  manager, which records it in Redis so the reaper names it in the job's error.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from jobqueue.groups import ResourceGroup
from jobqueue.logs import get_logger
from jobqueue.settings import Settings
from jobqueue.sizes import format_bytes
from manager.backends.base import OomKill
from manager.backends.local_cgroup import (
    CgroupUnavailable,
    MemoryCgroups,
    cgroup_name,
    detect,
    join_in_child,
    remove,
    stale,
)

log = get_logger("jobqueue.manager.local")
P = TypeVar("P")
STALE_CGROUP_SECONDS = 60  # an empty cgroup of ours older than this was left by an earlier manager


def default_consumer_memory(physical_bytes: int, share_percent: float, max_instances: int) -> int:
    """A consumer's memory when its group sets none: `share_percent` of RAM split over `max_instances`, in
    whole MiB (the kernel would round a cgroup limit to pages anyway)."""
    return int(physical_bytes * share_percent / 100 / max(1, max_instances)) >> 20 << 20


class ConsumerMemory:
    def __init__(self, settings: Settings, physical_bytes: int,
                 detect_cgroups: Callable[[Path | None], MemoryCgroups] = detect) -> None:
        self.settings = settings
        self.physical_bytes = physical_bytes
        self._detect = detect_cgroups
        self._cgroups: MemoryCgroups | None = None
        self._unavailable: str | None = None
        self._probed = False
        self._warned: set[str] = set()
        self._limits: dict[str, tuple[Path | None, int]] = {}  # consumer id -> (its cgroup, its limit)
        self._leftover: list[Path] = []
        self.pending_kills: list[OomKill] = []  # the reaper removes each once it is recorded in Redis

    def limit_for(self, group: ResourceGroup) -> int:
        if group.memory is not None:
            return group.memory
        return default_consumer_memory(self.physical_bytes, self.settings.local_memory_share_percent,
                                       group.max_instances)

    def _driver(self) -> MemoryCgroups | None:
        if not self._probed:
            self._probed = True
            try:
                self._cgroups = self._detect(self.settings.local_cgroup_parent)
                self._remove_stale(self._cgroups.parent)
            except (CgroupUnavailable, OSError) as e:
                self._unavailable = str(e)
        return None if self._unavailable else self._cgroups

    def _remove_stale(self, parent: Path) -> None:
        cutoff = time.time() - STALE_CGROUP_SECONDS
        for path in stale(parent, self.settings.environment):
            if path.stat().st_mtime < cutoff and remove(path):
                log.info("removed a consumer cgroup left by an earlier manager", cgroup=str(path))

    def prepare(self, consumer_id: str, group: ResourceGroup) -> tuple[dict[str, str], Callable[[], None] | None]:
        """The consumer's memory settings, and the `preexec_fn` that puts it in its cgroup (None: not enforced)."""
        limit = self.limit_for(group)
        env = {"JOBQUEUE_CONTAINER_MEMORY_BYTES": str(limit)}
        cgroups = self._driver()
        reason = self._unavailable
        if cgroups is not None:
            try:
                path = cgroups.create(cgroup_name(self.settings.environment, consumer_id), limit)
            except (CgroupUnavailable, OSError) as e:
                reason = f"{type(e).__name__}: {e}"
            else:
                self._limits[consumer_id] = (path, limit)
                return env, join_in_child(path)
        if group.name not in self._warned:
            self._warned.add(group.name)
            log.warning("consumer memory is not enforced: no memory cgroup can be made; only DuckDB's "
                        "memory_limit bounds it", group=group.name, memory=format_bytes(limit), reason=reason)
        self._limits[consumer_id] = (None, limit)
        return env, None

    def start(self, consumer_id: str, group: ResourceGroup, join: Callable[[], None] | None,
              popen: Callable[[Callable[[], None] | None], P]) -> P:
        """`popen(join)`; when the child cannot join its cgroup (an LSM, a cgroupfs that refuses), cgroups
        are given up with a warning and the consumer starts without one."""
        try:
            return popen(join)
        except subprocess.SubprocessError as e:
            if join is None:
                raise
            path, limit = self._limits.pop(consumer_id)
            if path is not None:
                remove(path)
            self._unavailable = f"a child could not join {path}: {e}"
            self._warned.discard(group.name)
            self.prepare(consumer_id, group)  # warns, and records the limit without a cgroup
            return popen(None)

    def exited(self, consumer_id: str, group: str, pid: int, returncode: int) -> OomKill | None:
        """The consumer is gone: read its cgroup's OOM kills, remove the cgroup, and keep an OOM kill."""
        path, limit = self._limits.pop(consumer_id, (None, 0))
        self._leftover = [p for p in self._leftover if not remove(p)]
        if path is None or self._cgroups is None:
            return None
        try:
            kills = self._cgroups.oom_kills(path)
        except OSError:
            kills = 0
        if not remove(path):
            self._leftover.append(path)  # something it started still runs there; removed later
        if kills and returncode == -signal.SIGKILL:
            kill = OomKill(consumer_id, group, format_bytes(limit), time.time(), f"pid-{pid}")
            self.pending_kills.append(kill)
            log.warning("consumer killed by the kernel: out of memory", consumer_id=consumer_id, group=group,
                        pid=pid, memory=kill.limit, cgroup=str(path))
            return kill
        return None

    @property
    def enforcement(self) -> str:
        """`cgroup v1`, `cgroup v2`, or `none` (once probed)."""
        cgroups = self._driver()
        return f"cgroup {cgroups.version}" if cgroups is not None else "none"
