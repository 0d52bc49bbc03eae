"""cgroup memory detection: v2, then v1, then physical RAM."""

from __future__ import annotations

from consumer.resources import (
    container_memory_bytes,
    memory_limit_bytes,
    parse_cgroup_v1_memory_limit,
    parse_cgroup_v2_memory_max,
    physical_memory_bytes,
)


def test_parsers():
    assert parse_cgroup_v2_memory_max("max\n") is None
    assert parse_cgroup_v2_memory_max("1073741824\n") == 1 << 30
    assert parse_cgroup_v1_memory_limit("9223372036854771712") is None
    assert parse_cgroup_v1_memory_limit("536870912") == 512 << 20


def test_v2_wins(tmp_path):
    (tmp_path / "memory.max").write_text("2147483648\n")
    (tmp_path / "memory").mkdir()
    (tmp_path / "memory" / "memory.limit_in_bytes").write_text("1073741824\n")
    assert container_memory_bytes(tmp_path) == (2 << 30, "cgroup v2 memory.max")


def test_v2_unlimited_falls_back_to_v1(tmp_path):
    (tmp_path / "memory.max").write_text("max\n")
    (tmp_path / "memory").mkdir()
    (tmp_path / "memory" / "memory.limit_in_bytes").write_text("1073741824\n")
    assert container_memory_bytes(tmp_path) == (1 << 30, "cgroup v1 memory.limit_in_bytes")


def test_no_limit_is_physical_memory(tmp_path):
    assert container_memory_bytes(tmp_path) == (physical_memory_bytes(), "physical memory")


def test_percent():
    assert memory_limit_bytes(1000 << 20, 75) == 750 << 20
    assert memory_limit_bytes(1 << 20, 50) == 16 << 20  # floor keeps DuckDB usable
