"""Settings: env names, reference-guide aliases, validation that names the variable, docs in sync."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobqueue.cli.main import settings_markdown
from jobqueue.errors import SettingsError
from jobqueue.settings import Settings, UnknownSettingError, load_settings, settings_reference


def test_reference_guide_aliases(monkeypatch, tmp_path):
    monkeypatch.setenv("CHALK_VELOX_SPILL_DIRECTORY", str(tmp_path / "nvme"))
    monkeypatch.setenv("CHALK_VELOX_QUERY_DEFAULT_MEMORY_LIMIT_PERCENT", "75")
    monkeypatch.setenv("LIBCHALK_VELOX_TABLE_SCAN_SSD_CACHE_BYTES", "200GiB")
    s = load_settings()
    assert s.spill_root == tmp_path / "nvme"
    assert s.query_memory_limit_percent == 75
    assert s.table_scan_cache_bytes == 200 << 30
    assert s.scan_cache_root == tmp_path / "nvme" / "table_scan_cache"


def test_own_names_and_sizes(monkeypatch, tmp_path):
    monkeypatch.setenv("JOBQUEUE_SPILL_DIRECTORY", str(tmp_path))
    monkeypatch.setenv("JOBQUEUE_CONTAINER_MEMORY_BYTES", "2GiB")
    monkeypatch.setenv("JOBQUEUE_ENVIRONMENT", "prod-eu")
    s = load_settings()
    assert (s.spill_root, s.container_memory_bytes, s.key_prefix) == (tmp_path, 2 << 30, "jobqueue:prod-eu:")


@pytest.mark.parametrize(
    ("var", "value", "words"),
    [
        ("JOBQUEUE_QUERY_MEMORY_LIMIT_PERCENT", "150", "less than or equal to 100"),
        ("JOBQUEUE_CONTAINER_MEMORY_BYTES", "-5", "greater than 0"),
        ("JOBQUEUE_CONTAINER_MEMORY_BYTES", "lots", "is not a size"),
        ("JOBQUEUE_ENVIRONMENT", "Prod Env", "JOBQUEUE_ENVIRONMENT must be"),
        ("JOBQUEUE_REGISTRY_PATH", "/nonexistent/registry.yaml", "does not exist"),
    ],
)
def test_bad_values_fail_naming_the_problem(monkeypatch, var, value, words):
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert words in str(info.value) and var in str(info.value) and info.value.variables == (var,)


def test_unknown_variable_is_an_error(monkeypatch):
    monkeypatch.setenv("JOBQUEUE_SPILL_DIRECTROY", "/tmp")
    with pytest.raises(UnknownSettingError, match="JOBQUEUE_SPILL_DIRECTROY") as info:
        load_settings()
    assert isinstance(info.value, SettingsError)


def test_to_env_round_trips(tmp_path):
    s = Settings(home=tmp_path, redis_url="redis://x:1/0", query_threads=3, consumer_exit_with_parent=True)
    env = s.to_env()
    assert env["JOBQUEUE_QUERY_THREADS"] == "3" and env["JOBQUEUE_CONSUMER_EXIT_WITH_PARENT"] == "true"
    restored = Settings(**{k.removeprefix("JOBQUEUE_").lower(): v for k, v in env.items()})
    assert restored == s


def test_docs_list_every_setting():
    doc = (Path(__file__).parents[2] / "docs" / "settings.md").read_text()
    assert doc.strip() == settings_markdown(settings_reference()).strip(), "run `make docs`"


def test_typos_get_the_nearest_name_and_every_error_is_reported_at_once(monkeypatch):
    monkeypatch.setenv("JOBQUEUE_REDIS_UR", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("JOBQUEUE_QUERY_THREADS", "many")
    with pytest.raises(UnknownSettingError) as info:
        load_settings()
    message = str(info.value)
    assert "JOBQUEUE_REDIS_UR (did you mean `JOBQUEUE_REDIS_URL`?)" in message, message
    assert "JOBQUEUE_QUERY_THREADS" in message, message  # the bad value is reported with the unknown name
    assert set(info.value.variables) == {"JOBQUEUE_REDIS_UR", "JOBQUEUE_QUERY_THREADS"}
