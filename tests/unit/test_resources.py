"""cgroup memory detection: v2, then v1, then physical RAM."""

from __future__ import annotations

from jobqueue.engine.resources import (
    container_cpus,
    container_memory_bytes,
    memory_limit_bytes,
    parse_cgroup_v1_cpu_quota,
    parse_cgroup_v1_memory_limit,
    parse_cgroup_v2_cpu_max,
    parse_cgroup_v2_memory_max,
    physical_memory_bytes,
    threads_for,
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


def test_cpu_quota_parsers_and_threads():
    assert parse_cgroup_v2_cpu_max("max 100000\n") is None
    assert parse_cgroup_v2_cpu_max("250000 100000\n") == 2.5
    assert parse_cgroup_v1_cpu_quota("-1", "100000") is None
    assert parse_cgroup_v1_cpu_quota("50000", "100000") == 0.5
    assert [threads_for(c) for c in (0.5, 1.0, 2.5, 7.0)] == [1, 1, 2, 7]


def test_cpu_quota_from_cgroup_files(tmp_path):
    (tmp_path / "cpu.max").write_text("100000 100000\n")
    assert container_cpus(tmp_path) == (1.0, "cgroup v2 cpu.max")
    (tmp_path / "cpu.max").write_text("max 100000\n")
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert container_cpus(tmp_path) == (0.5, "cgroup v1 cpu.cfs_quota_us")
