"""Container limits from cgroups: pure parsing plus one reader with an injectable root.

Memory: cgroup v2 `memory.max`, then v1 `memory.limit_in_bytes` (the tightest on the process's own cgroup
path), then physical RAM.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

# cgroup v1 reports "no limit" as a huge page-aligned number (e.g. 9223372036854771712).
_V1_UNLIMITED_THRESHOLD = 1 << 60


def parse_cgroup_v2_memory_max(text: str) -> int | None:
    value = text.strip()
    if value == "max" or not value:
        return None
    return int(value)


def parse_cgroup_v1_memory_limit(text: str) -> int | None:
    value = int(text.strip())
    return None if value >= _V1_UNLIMITED_THRESHOLD else value


def physical_memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _own_cgroup_dirs(root: Path, proc_self_cgroup: str, v1: bool) -> list[Path]:
    """This process's cgroup directory under `root` and each ancestor up to `root` (a limit anywhere on the
    path applies). Inside a container the mount is the container's own cgroup: then only `root`."""
    own = "/"
    for line in proc_self_cgroup.splitlines():
        _, controllers, path = line.split(":", 2)
        if (v1 and "memory" in controllers.split(",")) or (not v1 and controllers == ""):
            own = path
    parts = [p for p in own.split("/") if p]
    dirs = [root.joinpath(*parts[:i]) for i in range(len(parts), 0, -1)]
    return [d for d in dirs if d.is_dir()] + [root]


def _tightest(dirs: list[Path], name: str, parse: Callable[[str], int | None]) -> int | None:
    limits = [limit for d in dirs if (d / name).is_file() and (limit := parse((d / name).read_text())) is not None]
    return min(limits) if limits else None


def container_memory_bytes(cgroup_root: Path = Path("/sys/fs/cgroup"),
                           proc_self_cgroup: Path = Path("/proc/self/cgroup")) -> tuple[int, str]:
    """(bytes, where it came from): the tightest memory limit of this process's cgroup and its ancestors
    (so a consumer the local backend put in its own cgroup sees that cgroup's limit), else physical RAM."""
    physical = physical_memory_bytes()
    try:
        own = proc_self_cgroup.read_text()
    except OSError:
        own = ""
    limit = _tightest(_own_cgroup_dirs(cgroup_root, own, v1=False), "memory.max", parse_cgroup_v2_memory_max)
    if limit is not None:
        return min(limit, physical), "cgroup v2 memory.max"
    v1_root = cgroup_root / "memory"
    limit = _tightest(_own_cgroup_dirs(v1_root, own, v1=True), "memory.limit_in_bytes", parse_cgroup_v1_memory_limit)
    if limit is not None:
        return min(limit, physical), "cgroup v1 memory.limit_in_bytes"
    return physical, "physical memory"


def memory_limit_bytes(container_bytes: int, percent: float) -> int:
    """DuckDB's memory_limit: `percent` of the container's memory, at least 16 MiB."""
    return max(16 << 20, int(container_bytes * percent / 100))


def parse_cgroup_v2_cpu_max(text: str) -> float | None:
    """`cpu.max` is "<quota> <period>" or "max <period>"; returns CPUs or None when unlimited."""
    quota, _, period = text.strip().partition(" ")
    if quota == "max" or not quota:
        return None
    return int(quota) / int(period or 100000)


def parse_cgroup_v1_cpu_quota(quota_text: str, period_text: str) -> float | None:
    quota = int(quota_text.strip())
    return None if quota <= 0 else quota / int(period_text.strip())


def container_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> tuple[float, str]:
    """(CPUs, where it came from): the cgroup CPU quota (v2 `cpu.max`, v1 cfs quota/period),
    else the CPUs this process may run on."""
    available = float(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    v2 = cgroup_root / "cpu.max"
    if v2.is_file():
        cpus = parse_cgroup_v2_cpu_max(v2.read_text())
        if cpus is not None:
            return min(cpus, available), "cgroup v2 cpu.max"
    quota, period = cgroup_root / "cpu" / "cpu.cfs_quota_us", cgroup_root / "cpu" / "cpu.cfs_period_us"
    if quota.is_file() and period.is_file():
        cpus = parse_cgroup_v1_cpu_quota(quota.read_text(), period.read_text())
        if cpus is not None:
            return min(cpus, available), "cgroup v1 cpu.cfs_quota_us"
    return available, "cpu count"


def threads_for(cpus: float) -> int:
    """DuckDB threads for a CPU quota: whole CPUs, at least 1 (more threads than quota only throttle)."""
    return max(1, int(cpus))

