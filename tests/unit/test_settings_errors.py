"""A settings error names the variable and the fix, and never shows a secret: pydantic's own message
quotes the inputs, and for a whole-model check that is every setting, the Redis password among them."""

from __future__ import annotations

import traceback

import pytest

from jobqueue import AsyncJobQueueClient, JobQueueClient, SettingsError
from jobqueue.settings import Settings, load_settings

SECRET = "Zq7hunter2-very-long-secret-value"


def shown(error: BaseException) -> str:
    """Everything a user could see of the error: its text, its repr and the printed traceback."""
    return "".join(traceback.format_exception(error)) + repr(error) + str(getattr(error, "variables", ""))


def assert_hidden(error: BaseException, secret: str = SECRET) -> None:
    text = shown(error)
    assert secret[:4] not in text, text


@pytest.mark.parametrize("make", [load_settings, AsyncJobQueueClient, JobQueueClient],
                         ids=["load_settings", "AsyncJobQueueClient", "JobQueueClient"])
def test_a_model_check_failing_does_not_show_the_redis_password(monkeypatch, tmp_path, make):
    monkeypatch.setenv("JOBQUEUE_REDIS_PASSWORD", SECRET)
    monkeypatch.setenv("JOBQUEUE_S3_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("JOBQUEUE_REGISTRY_PATH", str(tmp_path / "missing.yaml"))
    with pytest.raises(SettingsError) as info:
        make()
    assert info.value.variables == ("JOBQUEUE_REGISTRY_PATH",)
    assert f"JOBQUEUE_REGISTRY_PATH: file {tmp_path / 'missing.yaml'} does not exist" in str(info.value)
    assert "`jobqueue settings`" in str(info.value)
    assert_hidden(info.value)


def test_a_bad_secret_is_named_but_not_shown(monkeypatch):
    with pytest.raises(SettingsError) as info:
        Settings(redis_password={"password": SECRET}, query_threads=0)
    assert info.value.variables == ("JOBQUEUE_REDIS_PASSWORD", "JOBQUEUE_QUERY_THREADS")
    assert "JOBQUEUE_REDIS_PASSWORD: Input should be a valid string (the value is not shown: secret)" in str(
        info.value)
    assert "JOBQUEUE_QUERY_THREADS: Input should be greater than 0 (got 0)" in str(info.value)  # not a secret
    assert_hidden(info.value)


def test_credentials_in_a_url_are_stripped(monkeypatch):
    monkeypatch.setenv("JOBQUEUE_PROFILER_EXPORT_TO", f"s3://AKIAEXAMPLE:{SECRET}@bucket")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "JOBQUEUE_PROFILER_EXPORT_TO: String should match pattern" in str(info.value)
    assert "s3://***@bucket" in str(info.value)
    assert_hidden(info.value)
    assert "AKIAEXAMPLE" not in shown(info.value)


def test_a_misspelt_secret_in_the_env_file_is_named_but_not_shown(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text(f"JOBQUEUE_REDIS_PASWORD={SECRET}\n")
    with pytest.raises(SettingsError) as info:
        Settings(_env_file=env_file)
    assert info.value.variables == ("JOBQUEUE_REDIS_PASWORD",)
    assert "JOBQUEUE_REDIS_PASWORD: not a setting (found in the env file); fix the name" in str(info.value)
    assert "(did you mean `JOBQUEUE_REDIS_PASSWORD`?)" in str(info.value)
    assert_hidden(info.value)
