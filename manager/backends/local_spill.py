"""The query slots the local backend's consumers may have on each spill volume, recorded before it starts them.

Each query's spill cap holds back `JOBQUEUE_SPILL_MIN_BYTES` for every idle query slot on its volume
(`jobqueue.engine.disk_space`), counting the slots the running consumers registered. Consumers started together
from zero register theirs when they have started, a second or two of imports later, and the first of them to
take a query was promised nearly the whole disk; the queries of the others then waited for it to end (up to
`JOBQUEUE_SPILL_WAIT_SECONDS`, then failed) with nothing written. In `make demo`, 4 of its 6 queries waited.

The local backend knows which consumers it may start: `max_instances` x `jobs_per_consumer` of each group, on the
volume that group spills to (its `spill_directory` or environment, else the manager's). It records that many
`expected` slots in each volume's ledger when it first reconciles a group, and keeps the entries in step with the
groups it reconciles; they go with the manager's process.

I/O: the ledger files (`disk_space.Ledger`); a failure to write one is logged and the consumers' own
registration is what counts, as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from jobqueue.engine.disk_space import Ledger, Reservation, expect_slots
from jobqueue.groups import ResourceGroup
from jobqueue.logs import get_logger
from jobqueue.settings import Settings, variable_names

log = get_logger("jobqueue.manager.local")

VOLUME_SETTINGS = ("home", "spill_directory", "spill_ledger_directory")  # what places a spill volume and its ledger


def consumer_ledger(settings: Settings, env: Mapping[str, str]) -> Ledger:
    """The ledger of the spill volume of a consumer started with `settings` and then `env` (its group's)."""
    update: dict[str, Path] = {}
    for field in VOLUME_SETTINGS:
        value = next((env[name] for name in variable_names(field) if env.get(name)), None)
        if value is not None:
            update[field] = Path(value)
    return Ledger.for_settings(settings.model_copy(update=update))


class ExpectedSlots:
    """The `expected` entries of one manager: per volume, the slots of every group it reconciles."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.groups: dict[str, tuple[ResourceGroup, Ledger]] = {}
        self.held: dict[Path, Reservation] = {}  # ledger file -> this manager's entry there

    def note(self, group: ResourceGroup) -> None:
        """`group` is configured (as it is now): its consumers' slots are expected on its volume."""
        known = self.groups.get(group.name)
        if known is not None and known[0] is group:
            return
        try:
            self.groups[group.name] = (group, consumer_ledger(self.settings, group.consumer_env()))
            self._sync()
        except OSError as e:
            log.warning("could not record the spill slots a group's consumers may take; each query's share of the "
                        "volume counts the consumers running", group=group.name, error=str(e))

    def forget(self, group: str) -> None:
        """`group` left the config: no consumer of it will start (its running ones registered their slots)."""
        if self.groups.pop(group, None) is not None:
            try:
                self._sync()
            except OSError as e:
                log.warning("could not update the spill slots expected on a volume", error=str(e))

    def release(self) -> None:
        for reservation in self.held.values():
            reservation.release()
        self.held.clear()

    def _sync(self) -> None:
        totals: dict[Path, tuple[Ledger, int]] = {}
        for group, ledger in self.groups.values():
            _, slots = totals.get(ledger.path, (ledger, 0))
            totals[ledger.path] = (ledger, slots + group.max_instances * group.jobs_per_consumer)
        for path in [p for p in self.held if p not in totals]:
            self.held.pop(path).release()
        for path, (ledger, slots) in totals.items():
            held = self.held.get(path)
            if held is None:
                if slots > 0:
                    self.held[path] = expect_slots(ledger, slots)
            elif slots == 0:
                self.held.pop(path).release()
            elif held.entry.slots != slots:
                held.set_slots(slots)  # in place: no moment where the volume expects none
