"""The seam between the reconcile loop and whatever runs consumers: `local` processes or `kubernetes`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from jobqueue.groups import ResourceGroup
from manager.observe import GroupObservation


@dataclass(frozen=True)
class OomKill:
    """The kernel killed a consumer for memory: `limit` as people read it, `at` epoch seconds, `kill_id`
    unique per kill of that consumer (a pid, a container id), so each kill is counted once."""

    consumer_id: str
    group: str
    limit: str
    at: float
    kill_id: str


class ScalerBackend(Protocol):
    name: str

    async def start(self) -> None:
        """Warm up before the first tick; a standby manager runs it too, so it takes over with a warm cache."""
        ...

    async def current_replicas(self, group: str) -> int:
        """Consumers of `group` that are running (or asked for) and not being stopped."""
        ...

    def managed_groups(self) -> set[str]:
        """Groups this backend runs consumers for, configured or not (a removed group stays until retired)."""
        ...

    async def converge(self, group: ResourceGroup, replicas: int, observed: GroupObservation) -> None:
        """Bring `group` to its config and `replicas` consumers; a no-op when already there. When lowering,
        stop idle consumers before busy ones and never one that `observed` reports busy."""
        ...

    async def retire(self, group: str, replicas: int, observed: GroupObservation) -> None:
        """`group` left the config: go down to `replicas` (its busy consumers) and remove it at zero."""
        ...

    def pending_oom_kills(self) -> list[OomKill]:
        """OOM kills seen and not yet recorded: the local backend sees its children exit (Kubernetes: none).
        The caller removes each kill from this list once it is recorded."""
        ...

    async def oom_killed(self, consumer_ids: set[str]) -> list[OomKill]:
        """Look up recent OOM kills of these consumers, whose jobs are being reaped (Kubernetes: the pods'
        `OOMKilled` reason; local: none beyond `take_oom_kills`)."""
        ...

    async def aclose(self) -> None:
        """The manager is shutting down."""
        ...
