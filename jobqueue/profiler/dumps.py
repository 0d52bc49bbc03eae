"""Dump names, object keys and retention: pure functions over names and times."""

from __future__ import annotations

from datetime import UTC, datetime

UPLOADED_SUFFIX = ".uploaded"  # an empty marker next to a dump once it is in the bucket


def dump_name(started: datetime, kind: str) -> str:
    """`20261122T193000Z-perf-data.gz`: UTC, so names sort in time order on every node."""
    return f"{started.astimezone(UTC):%Y%m%dT%H%M%SZ}-{kind}.gz"


def object_key(subdirectory: str, node: str, name: str) -> str:
    return f"{subdirectory.strip('/')}/{node}/{name}"


def to_prune(names: list[str], keep: int) -> list[str]:
    """The dumps to delete, oldest first, so that the newest `keep` remain."""
    ordered = sorted(names)
    return ordered[: max(0, len(ordered) - keep)]
