"""The seam between the reconcile loop and whatever runs consumers."""

from __future__ import annotations

from typing import Protocol

from jobqueue.groups import ResourceGroup
from manager.observe import GroupObservation


class ScalerBackend(Protocol):
    name: str

    async def current_replicas(self, group: str) -> int:
        """Consumers of `group` that are running and not being stopped."""
        ...

    async def scale(self, group: ResourceGroup, replicas: int, observed: GroupObservation) -> None:
        """Bring `group` to `replicas` consumers; when lowering, stop idle consumers before busy ones
        and never stop one that `observed` reports busy."""
        ...

    async def forget(self, group: str) -> None:
        """`group` left the config: drain and remove everything it runs."""
        ...

    async def aclose(self) -> None:
        """Stop every consumer gracefully (the manager is shutting down)."""
        ...
