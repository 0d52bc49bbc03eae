from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from jobqueue.profiler.dumps import dump_name, object_key, to_prune
from jobqueue.profiler.targets import role_of


@pytest.mark.parametrize(("comm", "cmdline", "role"), [
    ("jq-consumer\n", ["/usr/bin/python3", "-X", "x"], "consumer"),
    ("jq-manager", [], "manager"),
    ("python3", ["/venv/bin/python3", "/venv/bin/jobqueue", "consumer", "--resource-group", "etl"], "consumer"),
    ("python3", ["python", "-m", "jobqueue.cli.main", "manager"], "manager"),
    ("python", ["python", "-m", "consumer", "--resource-group", "etl", "--max-jobs", "1"], "consumer"),
    ("jobqueue", ["/venv/bin/python", "/venv/bin/jobqueue", "up"], "manager"),
    ("jobqueue", ["/venv/bin/python", "/venv/bin/jobqueue", "profiler"], None),  # the daemon never samples itself
    ("jq-other", ["jobqueue"], None),
    ("redis-server", ["redis-server", "*:6379"], None),
    ("python3", ["python3", "consumer.py"], None),
])
def test_role_of(comm, cmdline, role):
    assert role_of(comm, cmdline) == role


def test_names_are_utc_and_sort_in_time_order():
    t = datetime(2026, 11, 22, 23, 59, 30, tzinfo=timezone(timedelta(hours=-5)))
    assert dump_name(t, "perf-data") == "20261123T045930Z-perf-data.gz"
    names = [dump_name(datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=m), "perf-data") for m in (61, 5, 600)]
    assert to_prune(names, 2) == [names[1]]
    assert to_prune(names, 5) == []
    assert object_key("/team/profiles/", "ip-10-0-1-5", names[0]) == f"team/profiles/ip-10-0-1-5/{names[0]}"
