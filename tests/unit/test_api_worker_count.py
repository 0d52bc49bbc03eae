"""How many processes `jobqueue api` serves with: JOBQUEUE_API_WORKERS when set, else one per whole core it may use
(its cgroup CPU quota), 1 to 4."""

from __future__ import annotations

import pytest

from jobqueue.api.server import MAX_DEFAULT_WORKERS, worker_count


@pytest.mark.parametrize(("configured", "cpus", "expected"), [
    (None, 2.0, 2), (None, 0.5, 1), (None, 1.9, 1), (None, 64.0, MAX_DEFAULT_WORKERS), (3, 1.0, 3), (1, 8.0, 1),
])
def test_worker_count(configured, cpus, expected):
    assert worker_count(configured, cpus) == expected
