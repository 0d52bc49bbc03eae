"""Disk space on a spill volume, shared by every query and scan cache on it: one ledger per volume.

Each query's DuckDB `max_temp_directory_size` used to be "free space minus the reserve" measured at its
own start, so two concurrent queries could each be promised the same free space and both hit ENOSPC.
Now every reservation on a volume goes through one ledger:

- **The ledger** is a JSON file `<JOBQUEUE_SPILL_LEDGER_DIRECTORY>/volume-<major>-<minor>.json`, keyed by the
  volume's device number (so spill directories and scan caches of any group on the same volume share it), read
  and rewritten under an exclusive `flock` on a sibling `.lock` file and replaced atomically. An entry is
  `{kind, id, pid, started, path, bytes, slots}`: `spill` (one query's spill directory), `cache` (one scan cache
  directory), `slots` (a consumer and how many queries it runs at once) or `expected` (the query slots a
  manager's consumers may have on the volume). Entries whose process is gone (pid and start time, so a reused
  pid does not count) are dropped whenever the ledger is read: a SIGKILLed consumer's reservations do not leak.
- **The rule.** Space already written is already missing from the free space, so an entry counts only
  its *unused* part, `bytes - du(path)` (measured before the free space, which makes it conservative).
  For a new query: `available = free - JOBQUEUE_SPILL_RESERVE_BYTES - sum(unused parts of the others)`.
  Hence, at every grant, `sum(unused parts of all reservations) <= free - reserve` (give or take the drift
  tolerance below, taken from the reserve): the caps never overcommit the volume (DuckDB never writes
  more than its cap, and a cache never holds more than its grant).
- **Sharing.** A query gets `available` minus `JOBQUEUE_SPILL_MIN_BYTES` for every other query slot on
  the volume that is idle, and at least the minimum: a lone big query gets nearly everything, and a query
  starting next to it still gets its minimum. The slots on a volume are those of its running consumers (their
  `slots` entries), or those a manager expects there, if more (its `expected` entry: every consumer its groups
  may start, which `manager.backends.local_spill` records before it starts any). Without the latter, the first
  query of consumers started together from zero found only its own slot (the others were still importing),
  was promised the whole disk, and the others waited for it to end with nothing written.
- **Drift.** Free space also shrinks by what no entry accounts for (result files, directories, other
  processes), so the last of several queries starting together would find a few bytes less than the minimum
  the others held back for it, and wait for a whole query to end. A shortfall of at most
  `min(JOBQUEUE_SPILL_RESERVE_BYTES / 4, JOBQUEUE_SPILL_MIN_BYTES / 2)` is taken from the reserve instead:
  the query gets its minimum, and the caps never overcommit the volume by more than a quarter of the reserve.
- **Waiting.** When `available` is further below the minimum and other queries hold reservations, the query
  waits for them (polling, cancellable) up to `JOBQUEUE_SPILL_WAIT_SECONDS`, then fails with
  `SpillSpaceUnavailable`, naming the volume, the numbers and the settings. With nobody to wait for, it
  runs with what there is (at least 1 MiB, kept out of the reserve), as before: a query that does not
  spill still runs on a nearly full disk, and one that does fails with "spill space exhausted".
- **Scan caches** reserve their configured size (minus what they hold already) when they open; a cache
  that cannot get it all is shrunk to what it got.
- **Sweep.** Spill directories are named `q-<pid>-<process start>-<uuid>`; at start-up a consumer
  removes those whose process is gone (spill of killed consumers).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import psutil

from jobqueue.logs import get_logger
from jobqueue.settings import Settings

log = get_logger("jobqueue.consumer.disk_space")
FLOOR_BYTES = 1 << 20  # DuckDB takes 0 as "no limit": a cap is never below this
POLL_SECONDS = 0.5


class SpillSpaceUnavailable(RuntimeError):
    """A query could not reserve its minimum spill space in time (retryable: the space may come back)."""


def process_started(pid: int) -> int | None:
    """A process's start time in centiseconds (stable for its life), or None when it does not exist."""
    try:
        return round(psutil.Process(pid).create_time() * 100)
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return None


_self_started: tuple[int, int] | None = None


def own_identity() -> tuple[int, int]:
    """(pid, start time) of this process; recomputed after a fork."""
    global _self_started
    if _self_started is None or _self_started[0] != os.getpid():
        _self_started = (os.getpid(), process_started(os.getpid()) or 0)
    return _self_started


def alive(pid: int, started: int) -> bool:
    return process_started(pid) == started


def du(path: str | Path) -> int:
    """Bytes allocated on disk under `path` (a file or a tree); 0 when it does not exist."""
    total = 0
    try:
        total = os.lstat(path).st_blocks * 512
    except OSError:
        return 0
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total


def mount_point(path: Path) -> Path:
    """The mount point of the volume holding `path` (for messages)."""
    path = path.resolve()
    dev = os.stat(path).st_dev
    while path.parent != path and os.stat(path.parent).st_dev == dev:
        path = path.parent
    return path


# --- the spill directory's name carries its owner ---------------------------------------------------
def spill_dir_name() -> str:
    pid, started = own_identity()
    return f"q-{pid}-{started}-{uuid.uuid4().hex}"


def spill_dir_owner(name: str) -> tuple[int, int] | None:
    """(pid, start time) from a spill directory's name; None for another format (older versions)."""
    parts = name.split("-")
    if len(parts) == 4 and parts[0] == "q" and parts[1].isdigit() and parts[2].isdigit():
        return int(parts[1]), int(parts[2])
    return None


def own_spill_bytes(spill_root: Path) -> int:
    """Bytes on disk in this process's spill directories under `spill_root`: its running queries' spill now."""
    own = own_identity()
    total = 0
    for path in spill_root.glob("q-*") if spill_root.is_dir() else ():
        if spill_dir_owner(path.name) == own:
            for root, _, files in os.walk(path):
                for name in files:
                    with contextlib.suppress(OSError):  # the query removes its files as it goes
                        total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total


def sweep_spill(spill_root: Path) -> list[Path]:
    """Remove the spill directories under `spill_root` whose owning process is gone; returns them."""
    removed = []
    for path in sorted(spill_root.glob("q-*")) if spill_root.is_dir() else []:
        owner = spill_dir_owner(path.name)
        if not path.is_dir() or (owner is not None and alive(*owner)):
            continue
        size = du(path)
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
        log.info("removed the spill directory of a query whose process is gone", path=str(path), bytes=size)
    return removed


# --- the ledger -------------------------------------------------------------------------------------
@dataclass
class Entry:
    kind: str  # spill | cache | slots | expected
    id: str
    pid: int
    started: int
    path: str = ""
    bytes: int = 0
    slots: int = 0

    def unused(self) -> int:
        return max(0, self.bytes - du(self.path)) if self.bytes else 0


class Ledger:
    """The reservations on the volume holding `volume_path`."""

    def __init__(self, directory: Path, volume_path: Path) -> None:
        volume_path.mkdir(parents=True, exist_ok=True)
        directory.mkdir(parents=True, exist_ok=True)
        dev = os.stat(volume_path).st_dev
        self.volume_path = volume_path
        self.path = directory / f"volume-{os.major(dev)}-{os.minor(dev)}.json"

    @classmethod
    def for_settings(cls, settings: Settings, volume_path: Path | None = None) -> Ledger:
        return cls(settings.spill_ledger_root, volume_path or settings.spill_root)

    @contextlib.contextmanager
    def locked(self) -> Iterator[list[Entry]]:
        """The live entries, under the volume's lock; changes to the list are written back."""
        with open(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                entries = self._read()
                live = [e for e in entries if alive(e.pid, e.started)]
                before = list(live)
                yield live
                if live != entries or live != before:
                    tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
                    tmp.write_text(json.dumps([asdict(e) for e in live]))
                    os.replace(tmp, self.path)
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def _read(self) -> list[Entry]:
        try:
            return [Entry(**e) for e in json.loads(self.path.read_text())]
        except FileNotFoundError:
            return []
        except (ValueError, TypeError) as e:  # written atomically, so only a hand edit gets here
            log.warning("space ledger unreadable; starting it afresh", path=str(self.path), error=str(e))
            return []

    def add(self, entry: Entry) -> Reservation:
        with self.locked() as entries:
            entries.append(entry)
        return Reservation(self, entry)


class Reservation:
    """An entry held in a ledger until `release()` (or until its process is gone)."""

    def __init__(self, ledger: Ledger, entry: Entry) -> None:
        self.ledger, self.entry = ledger, entry
        self.released = False

    @property
    def bytes(self) -> int:
        return self.entry.bytes

    def set_slots(self, slots: int) -> None:
        """Change the slot count of this `slots` or `expected` entry in place: one write, never a moment without
        the entry (a grant then would count no slots of it)."""
        self.entry = replace(self.entry, slots=slots)
        with self.ledger.locked() as entries:
            entries[:] = [self.entry if e.id == self.entry.id else e for e in entries]

    def release(self) -> None:
        if not self.released:
            self.released = True
            with self.ledger.locked() as entries:
                entries[:] = [e for e in entries if e.id != self.entry.id]


def _entry(kind: str, path: Path | str = "", nbytes: int = 0, slots: int = 0) -> Entry:
    pid, started = own_identity()
    return Entry(kind, uuid.uuid4().hex, pid, started, str(path), nbytes, slots)


# --- what a query gets ----------------------------------------------------------------------------
def drift_tolerance(reserve_bytes: int, min_bytes: int) -> int:
    """How far below the minimum a query's available space may be and still get the minimum, from the reserve
    (the module's doc: **Drift**)."""
    return min(reserve_bytes // 4, min_bytes // 2)


def spill_grant(available: int, min_bytes: int, idle_slots: int, others_spilling: int,
                tolerance: int = 0) -> int | None:
    """A query's spill cap (pure): None means wait for the other queries. `tolerance`: a shortfall below
    `min_bytes` of at most this much still gets `min_bytes` (`drift_tolerance`)."""
    if available >= min_bytes:
        return max(min_bytes, available - idle_slots * min_bytes, FLOOR_BYTES)
    if others_spilling and available + tolerance >= min_bytes:
        return max(min_bytes, FLOOR_BYTES)
    if others_spilling:
        return None
    return max(FLOOR_BYTES, available)


def _try_reserve_spill(ledger: Ledger, settings: Settings, spill_dir: Path) -> tuple[Reservation | None, str]:
    with ledger.locked() as entries:
        others = [e for e in entries if e.kind in ("spill", "cache")]
        unused = sum(e.unused() for e in others)  # before the free space: conservative
        free = shutil.disk_usage(ledger.volume_path).free
        available = free - settings.spill_reserve_bytes - unused
        spilling = sum(e.kind == "spill" for e in entries)
        registered = sum(e.slots for e in entries if e.kind == "slots")
        expected = sum(e.slots for e in entries if e.kind == "expected")
        slots = max(registered, expected, spilling + 1)
        grant = spill_grant(available, settings.spill_min_bytes, slots - 1 - spilling, spilling,
                            drift_tolerance(settings.spill_reserve_bytes, settings.spill_min_bytes))
        state = (f"{free} bytes free, {settings.spill_reserve_bytes} kept free (JOBQUEUE_SPILL_RESERVE_BYTES), "
                 f"{unused} more promised to {len(others)} other spill directories and scan caches")
        if grant is None:
            return None, state
        entry = _entry("spill", spill_dir, grant)
        entries.append(entry)
    return Reservation(ledger, entry), state


@contextlib.contextmanager
def spill_reservation(settings: Settings, spill_dir: Path,
                      cancelled: Callable[[], bool] = lambda: False) -> Iterator[int]:
    """Reserve spill space for the query that will spill into `spill_dir`; yields its cap in bytes.
    Waits for other queries when the volume cannot give the minimum; raises `SpillSpaceUnavailable` after
    `JOBQUEUE_SPILL_WAIT_SECONDS`, and `InterruptedError` when `cancelled()` turns true meanwhile."""
    ledger = Ledger.for_settings(settings)
    deadline = time.monotonic() + settings.spill_wait_seconds
    waited = False
    while True:
        reservation, state = _try_reserve_spill(ledger, settings, spill_dir)
        if reservation is not None:
            break
        if not waited:
            log.info("waiting for spill space", state=state, min_bytes=settings.spill_min_bytes)
            waited = True
        if cancelled():
            raise InterruptedError("query was interrupted while waiting for spill space")
        if time.monotonic() >= deadline:
            raise SpillSpaceUnavailable(
                f"no spill space on {mount_point(ledger.volume_path)} (the volume of {ledger.volume_path}): {state}; "
                f"this query needs at least {settings.spill_min_bytes} bytes (JOBQUEUE_SPILL_MIN_BYTES) and waited "
                f"{settings.spill_wait_seconds:g} s (JOBQUEUE_SPILL_WAIT_SECONDS). Free space on the volume, lower "
                "JOBQUEUE_TABLE_SCAN_CACHE_BYTES or the group's jobs_per_consumer, or wait longer")
        time.sleep(POLL_SECONDS)
    try:
        yield reservation.bytes
    finally:
        reservation.release()


def reserve_slots(settings: Settings, slots: int) -> Reservation:
    """A consumer's presence on its spill volume: how many queries it may run at once."""
    return Ledger.for_settings(settings).add(_entry("slots", slots=slots))


def expect_slots(ledger: Ledger, slots: int) -> Reservation:
    """A manager's `expected` entry: the query slots its consumers may have on the ledger's volume, counted by
    every spill grant there (when more than the slots registered) while this process lives."""
    return ledger.add(_entry("expected", slots=slots))


def reserve_cache(settings: Settings, directory: Path, capacity: int) -> Reservation:
    """A scan cache's reservation: its capacity, or what the volume can still give (with what it holds)."""
    ledger = Ledger.for_settings(settings, directory)
    with ledger.locked() as entries:
        others = [e for e in entries if e.kind in ("spill", "cache")]
        unused = sum(e.unused() for e in others)
        available = shutil.disk_usage(directory).free - settings.spill_reserve_bytes - unused
        entry = _entry("cache", directory, min(capacity, du(directory) + max(0, available)))
        entries.append(entry)
    return Reservation(ledger, entry)
