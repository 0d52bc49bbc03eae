"""Local backend: consumers as child processes of the manager, for one machine without Kubernetes.

Scale-down is graceful: SIGTERM makes a consumer stop taking jobs and finish the running ones.
Idle consumers (or ones still starting) are stopped before any other; busy ones never.
Children drain by themselves if the manager dies (`JOBQUEUE_CONSUMER_EXIT_WITH_PARENT`).
Each consumer's output goes to `<home>/logs/<consumer_id>.log`. Each serves its `/metrics` on a free
loopback port (unless `JOBQUEUE_CONSUMER_HTTP_PORT` is -1), named in its log's `ops server listening` line.

Each consumer runs in a slot of its group (`<group>-<n>`, the lowest one free), passed as
`JOBQUEUE_CONSUMER_SLOT`: its scan cache lives in `<cache directory>/slot-<slot>`, so consumers on one
machine never contend for one cache, and a restarted consumer finds its slot's warm cache. A consumer that
exits unexpectedly soon after its start (`QUICK_EXIT_SECONDS`) is not restarted at once: its slot waits
2 s, doubling per quick exit in a row up to `JOBQUEUE_CONSUMER_RESTART_BACKOFF_MAX_SECONDS`, and the last
error (exit status and last log line) is reported by `start_trouble()` for `jobqueue status`.
The query slots every group's consumers may take are recorded in their spill volume's ledger before any of them
starts (`local_spill`), so the first query does not take the whole disk from the others.
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
from pathlib import Path

from jobqueue.engine.resources import physical_memory_bytes
from jobqueue.groups import ResourceGroup
from jobqueue.logs import get_logger
from jobqueue.settings import Settings
from manager.backends.base import OomKill
from manager.backends.local_memory import ConsumerMemory
from manager.backends.local_spill import ExpectedSlots
from manager.observe import GroupObservation

log = get_logger("jobqueue.manager.local")
QUICK_EXIT_SECONDS = 30.0  # an unexpected exit this soon after the start counts as a failed start
BACKOFF_BASE_SECONDS = 2.0


@dataclass
class LocalConsumer:
    consumer_id: str
    group: str
    process: subprocess.Popen[bytes]
    started_at: float = field(default_factory=time.time)
    stopping: bool = False
    slot: int = 0

    @property
    def slot_name(self) -> str:
        return f"{self.group}-{self.slot}"

    @property
    def pid(self) -> int:
        return self.process.pid


@dataclass
class SlotTrouble:
    """A slot whose consumers keep exiting soon after they start."""

    quick_exits: int = 0
    retry_at: float = 0.0
    last_error: str = ""


class LocalBackend:
    name = "local"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.consumers: dict[str, LocalConsumer] = {}
        self._ids = itertools.count(1)
        self.log_dir = settings.home / "logs"
        self.unexpected_exits = 0  # consumers that exited without being told to (crash, kill -9, OOM)
        self.memory = ConsumerMemory(settings, physical_memory_bytes())  # limits, cgroups, OOM kills
        self.troubles: dict[tuple[str, int], SlotTrouble] = {}  # (group, slot) -> its crash loop
        self.expected_slots = ExpectedSlots(settings)  # spill slots its consumers may take, on each volume

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
                self._note_exit(c, code)

    def active(self, group: str) -> list[LocalConsumer]:
        self._reap()
        return [c for c in self.consumers.values() if c.group == group and not c.stopping]

    async def current_replicas(self, group: str) -> int:
        return len(self.active(group))

    def managed_groups(self) -> set[str]:
        self._reap()
        return {c.group for c in self.consumers.values() if not c.stopping}

    async def converge(self, group: ResourceGroup, replicas: int, observed: GroupObservation) -> None:
        self.expected_slots.note(group)  # before any of its consumers starts
        active = self.active(group.name)
        if replicas > len(active):
            for _ in range(replicas - len(active)):
                if self._spawn(group, replicas) is None:  # every free slot is backing off
                    break
        else:
            self._stop_idle(active, replicas, observed)

    async def retire(self, group: str, replicas: int, observed: GroupObservation) -> None:
        self.expected_slots.forget(group)
        self._stop_idle(self.active(group), replicas, observed)

    def _stop_idle(self, active: list[LocalConsumer], replicas: int, observed: GroupObservation) -> None:
        if replicas < len(active):
            registered = {c.consumer_id for c in observed.consumers}
            idle = [c for c in active if c.consumer_id not in observed.busy_ids]
            # never-registered (still starting) first, then idle ones, youngest first
            idle.sort(key=lambda c: (c.consumer_id in registered, -c.started_at))
            for c in idle[: len(active) - replicas]:
                self._stop(c)

    def _spawn(self, group: ResourceGroup, replicas: int | None = None) -> LocalConsumer | None:
        slot = self._free_slot(group.name, len(self.active(group.name)) + 1 if replicas is None else replicas)
        if slot is None:
            return None
        consumer_id = f"{group.name}-{os.getpid()}-{next(self._ids)}"
        memory_env, join_cgroup = self.memory.prepare(consumer_id, group)
        env = {
            **os.environ,
            **self.settings.to_env(),
            **memory_env,
            **group.consumer_env(),
            "JOBQUEUE_CONSUMER_ID": consumer_id,
            "JOBQUEUE_CONSUMER_SLOT": f"{group.name}-{slot}",
            "JOBQUEUE_CONSUMER_EXIT_WITH_PARENT": "true",
            # the consumer's log file is read back by `jobqueue jobs logs` (JSON lines), whatever the terminal gets
            "JOBQUEUE_LOG_FORMAT": "json",
            # a free port each (a fixed one would clash): the consumer logs it (`ops server listening`, its `url`)
            "JOBQUEUE_CONSUMER_HTTP_PORT": "-1" if self.settings.consumer_http_port < 0 else "0",
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
        c = LocalConsumer(consumer_id, group.name, process, slot=slot)
        self.consumers[consumer_id] = c
        log.info("consumer started", consumer_id=consumer_id, group=group.name, pid=process.pid, slot=c.slot_name,
                 log=str(self.log_dir / f"{consumer_id}.log"))  # its metrics url: its `ops server listening` line
        return c

    def pending_oom_kills(self) -> list[OomKill]:
        self._reap()
        return self.memory.pending_kills

    async def oom_killed(self, consumer_ids: set[str]) -> list[OomKill]:
        """Every OOM kill of a child is seen when it exits (`pending_oom_kills`): nothing to look up."""
        return []

    # --- slots and crash loops ------------------------------------------------------------------
    def _free_slot(self, group: str, replicas: int) -> int | None:
        """The lowest slot of `group` that no consumer holds and that is not backing off; None if none is.
        Slots are counted up to `replicas` plus the consumers still draining (they keep theirs)."""
        mine = [c for c in self.consumers.values() if c.group == group]
        taken = {c.slot for c in mine}
        now = time.time()
        for slot in range(replicas + sum(c.stopping for c in mine)):
            trouble = self.troubles.get((group, slot))
            if slot not in taken and (trouble is None or trouble.retry_at <= now):
                return slot
        return None

    def _note_exit(self, c: LocalConsumer, code: int) -> None:
        """A consumer that exits unexpectedly soon after its start backs its slot off; one that ran for a
        while clears its slot's record."""
        if c.stopping:
            return
        key = (c.group, c.slot)
        if time.time() - c.started_at >= QUICK_EXIT_SECONDS:
            self.troubles.pop(key, None)
            return
        trouble = self.troubles.setdefault(key, SlotTrouble())
        trouble.quick_exits += 1
        delay = min(self.settings.consumer_restart_backoff_max_seconds,
                    BACKOFF_BASE_SECONDS * 2 ** (trouble.quick_exits - 1))
        trouble.retry_at = time.time() + delay
        trouble.last_error = f"{_exit_status(code)}: {_last_line(self.log_dir / f'{c.consumer_id}.log')}"
        log.warning("consumer exited soon after its start; backing off its slot", slot=c.slot_name,
                    quick_exits=trouble.quick_exits, restart_in_seconds=delay, error=trouble.last_error)

    def start_trouble(self, group: str) -> str | None:
        """What `jobqueue status` shows for a group whose consumers keep failing to start (None when fine)."""
        now = time.time()
        held = {c.slot: now - c.started_at for c in self.consumers.values() if c.group == group}
        for (g, slot), t in list(self.troubles.items()):
            if g == group and (held.get(slot, 0.0) >= QUICK_EXIT_SECONDS  # it has run long enough since
                               or (slot not in held and now - t.retry_at >= QUICK_EXIT_SECONDS)):  # not wanted
                del self.troubles[(g, slot)]
        parts = [f"consumer slot {g}-{slot} exited {t.quick_exits}x soon after starting; next start in "
                 f"{max(0.0, t.retry_at - now):.0f}s; last error: {t.last_error}"
                 for (g, slot), t in sorted(self.troubles.items()) if g == group and slot not in held]
        return "; ".join(parts) or None

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
        self.expected_slots.release()


def _exit_status(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _last_line(path: Path, limit: int = 400) -> str:
    """The end of a consumer's log, shortened: its `error: ...` message (the CLI's one-line errors, which the
    console may have wrapped over a few lines), else its last line (an exception's, or a JSON log record)."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 8192))
            lines = [line.strip() for line in f.read().decode(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "(no log)"
    for i in range(len(lines) - 1, max(-1, len(lines) - 12), -1):
        if lines[i].startswith("error:"):
            return " ".join(lines[i:])[:limit]
    return lines[-1][:limit] if lines else "(no output)"
