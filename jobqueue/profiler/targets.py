"""Which processes on this node belong to jobqueue, and in which role.

A manager or consumer announces its role at start-up by naming itself `jq-manager` /
`jq-consumer` (`prctl(PR_SET_NAME)`, the `comm` that `ps`, `top` and `perf` show; threads started
later inherit it). The daemon reads `/proc/<pid>/comm`, and falls back to the command line for
processes started some other way (`jobqueue consumer`, `python -m consumer`,
`python -m jobqueue.cli.main manager`).
With `hostPID: true` the DaemonSet sees the node's processes and their host pids.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
from pathlib import Path
from typing import NamedTuple

ROLES = ("manager", "consumer")
COMM_PREFIX = "jq-"
_PR_SET_NAME = 15
_ROLE_COMMANDS = {"manager": "manager", "up": "manager", "consumer": "consumer"}


class Target(NamedTuple):
    pid: int
    role: str


def announce_role(role: str) -> None:
    """Name this process `jq-<role>` so profilers and `ps` can tell what it is. Best effort."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(libc_name, use_errno=True).prctl(_PR_SET_NAME, (COMM_PREFIX + role).encode(), 0, 0, 0)


def role_of(comm: str, cmdline: list[str]) -> str | None:
    """The jobqueue role of a process from its `comm` and argv, or None when it is not ours."""
    comm = comm.strip()
    if comm.startswith(COMM_PREFIX) and comm[len(COMM_PREFIX):] in ROLES:
        return comm[len(COMM_PREFIX):]
    args = [os.path.basename(a) for a in cmdline]
    for i, arg in enumerate(args[:-1]):
        if arg in ("jobqueue", "jobqueue.cli.main") and args[i + 1] in _ROLE_COMMANDS:
            return _ROLE_COMMANDS[args[i + 1]]
        if arg == "-m" and args[i + 1] == "consumer":  # what both backends run: `python -m consumer`
            return "consumer"
    return None


def find_targets(proc: Path = Path("/proc"), exclude: int | None = None) -> list[Target]:
    """Every jobqueue manager and consumer visible in `proc`, by pid."""
    exclude = os.getpid() if exclude is None else exclude
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == exclude:
            continue
        try:
            comm = (entry / "comm").read_text()
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        role = role_of(comm, [a for a in cmdline if a])
        if role is not None:
            found.append(Target(int(entry.name), role))
    return sorted(found)
