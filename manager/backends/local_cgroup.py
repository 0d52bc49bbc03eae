"""Memory limits for local consumers: one memory cgroup per consumer process, v2 or v1.

The local backend makes a cgroup `jobqueue.<environment>.<consumer id>` under the manager's own
memory cgroup (or `JOBQUEUE_LOCAL_CGROUP_PARENT`), sets its limit to the group's `memory`, and the
child joins it between fork and exec (`preexec`), so none of the consumer's allocations happen
outside it. Swap is capped as well (v2 `memory.swap.max`, v1 `memory.memsw.limit_in_bytes`), so the
limit is not dodged by swapping. When the consumer exits, the backend reads the cgroup's OOM-kill
counter (v2 `memory.events`, v1 `memory.oom_control`) and removes the directory.

Where no cgroup can be made (no memory controller, read-only cgroupfs, v2 without the controller
delegated), `CgroupUnavailable` says why and the backend runs the consumer without enforcement.
`RLIMIT_AS` is no substitute: DuckDB, jemalloc and Arrow reserve far more address space than they
touch (about 1 GiB of virtual memory for a query using 100 MiB), so a 1 GiB address-space limit
already breaks a query that DuckDB runs in 200 MB.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

CGROUP_MOUNT = Path("/sys/fs/cgroup")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


class CgroupUnavailable(Exception):
    """No memory cgroup can be made here; the message says why and what would fix it."""


class MemoryCgroups(Protocol):
    version: str
    parent: Path

    def create(self, name: str, limit_bytes: int) -> Path:
        """A new cgroup `name` under `parent` limited to `limit_bytes` (memory and swap)."""
        ...

    def oom_kills(self, path: Path) -> int:
        """How many processes the kernel's OOM killer killed in `path`."""
        ...


def _oom_kill_count(text: str) -> int:
    """The `oom_kill N` line of v2 `memory.events` or v1 `memory.oom_control` (0 when absent)."""
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == "oom_kill":
            return int(value)
    return 0


def _write(path: Path, value: str) -> None:
    path.write_text(value)


class CgroupV2:
    version = "v2"

    def __init__(self, parent: Path) -> None:
        self.parent = parent

    def _enable_memory(self) -> None:
        control = self.parent / "cgroup.subtree_control"
        if "memory" in control.read_text().split():
            return
        try:
            _write(control, "+memory")
        except OSError as e:
            raise CgroupUnavailable(
                f"cannot enable the memory controller in {control} ({e.strerror or e}); a cgroup v2 parent "
                "that holds processes cannot delegate controllers: run the manager in a leaf of a delegated "
                "cgroup and set JOBQUEUE_LOCAL_CGROUP_PARENT to that cgroup") from e

    def create(self, name: str, limit_bytes: int) -> Path:
        self._enable_memory()
        path = self.parent / name
        path.mkdir(exist_ok=True)
        _write(path / "memory.max", str(limit_bytes))
        if (path / "memory.swap.max").exists():
            _write(path / "memory.swap.max", "0")
        return path

    def oom_kills(self, path: Path) -> int:
        return _oom_kill_count((path / "memory.events").read_text())


class CgroupV1:
    version = "v1"

    def __init__(self, parent: Path) -> None:
        self.parent = parent

    def create(self, name: str, limit_bytes: int) -> Path:
        path = self.parent / name
        path.mkdir(exist_ok=True)
        _write(path / "memory.limit_in_bytes", str(limit_bytes))
        with contextlib.suppress(OSError):  # absent or refused without swap accounting: then there is no swap
            _write(path / "memory.memsw.limit_in_bytes", str(limit_bytes))
        return path

    def oom_kills(self, path: Path) -> int:
        return _oom_kill_count((path / "memory.oom_control").read_text())


def own_cgroup(proc_self_cgroup: str, v1: bool) -> str:
    """This process's cgroup path: the `memory` controller's line on v1, the `0::` line on v2."""
    for line in proc_self_cgroup.splitlines():
        _, controllers, path = line.split(":", 2)
        if (v1 and "memory" in controllers.split(",")) or (not v1 and controllers == ""):
            return path
    return "/"


def detect(parent: Path | None = None, mount: Path = CGROUP_MOUNT,
           proc_self_cgroup: Path = Path("/proc/self/cgroup")) -> MemoryCgroups:
    """The memory cgroup hierarchy to put consumers in: v2 when it has the memory controller, else v1.
    `parent` overrides where (default: this process's own memory cgroup). Raises `CgroupUnavailable`."""
    v2 = (mount / "cgroup.controllers").is_file() and "memory" in (mount / "cgroup.controllers").read_text().split()
    root = mount if v2 else mount / "memory"
    if not v2 and not (root / "memory.limit_in_bytes").is_file():
        raise CgroupUnavailable(f"no memory cgroup controller mounted at {mount} (v2) or {root} (v1)")
    if parent is None:
        try:
            own = own_cgroup(proc_self_cgroup.read_text(), v1=not v2).lstrip("/")
        except OSError:
            own = ""
        parent = root / own if own and (root / own).is_dir() else root  # inside a container: the mount is ours
    if not os.access(parent, os.W_OK):
        raise CgroupUnavailable(f"{parent} is not writable (cgroupfs read-only, or not root)")
    return CgroupV2(parent) if v2 else CgroupV1(parent)


def cgroup_name(environment: str, consumer_id: str) -> str:
    """`jobqueue.<environment>.<consumer id>` (the consumer id holds the group and its slot)."""
    return _UNSAFE.sub("_", f"jobqueue.{environment}.{consumer_id}")


def join_in_child(path: Path) -> Callable[[], None]:
    """A `preexec_fn` moving the forked child into `path` before it execs: writing 0 to `cgroup.procs`
    moves the writer. Only os calls on prepared bytes run between fork and exec."""
    procs = os.fsencode(path / "cgroup.procs")

    def join() -> None:
        fd = os.open(procs, os.O_WRONLY)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)

    return join


def remove(path: Path) -> bool:
    """rmdir a cgroup whose processes are gone; False while something still runs in it."""
    try:
        path.rmdir()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True


def stale(parent: Path, environment: str) -> list[Path]:
    """Cgroups of this environment left by an earlier manager (removable once empty)."""
    prefix = cgroup_name(environment, "")
    return [p for p in parent.glob(prefix + "*") if p.is_dir()]
