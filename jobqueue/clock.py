"""The clock: where the manager and a consumer read the time, so a test can replace it in one place. Pure, no I/O.

A process makes one `Clock` and hands it down: the manager's reconciler to its reaper, its scheduler and
its `JobStore`; a consumer to its job runs and its `JobStore`. Durations and liveness use `time.monotonic`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]  # the current time, timezone-aware


def system_clock() -> datetime:
    return datetime.now(UTC)
