"""The quota and OIDC settings: which limits apply to whom, and OIDC settings that would be unsafe are refused."""

from __future__ import annotations

import pytest

from jobqueue.errors import SettingsError
from jobqueue.quotas import QuotaKind, check_input_rows, quotas_for
from jobqueue.settings import Settings, load_settings


def limits(settings: Settings, owner: str | None, team: str | None) -> dict[str, tuple[str, int, str]]:
    return {q.kind.value: (q.subject, q.limit, q.setting) for q in quotas_for(settings, owner, team)}


def test_defaults_apply_and_a_team_override_replaces_only_what_it_names(monkeypatch, tmp_path):
    monkeypatch.setenv("JOBQUEUE_HOME", str(tmp_path))
    monkeypatch.setenv("JOBQUEUE_QUOTA_MAX_QUEUED_PER_OWNER", "20")
    monkeypatch.setenv("JOBQUEUE_QUOTA_MAX_QUEUED_PER_TEAM", "200")
    monkeypatch.setenv("JOBQUEUE_QUOTA_MAX_INPUT_ROWS", "1000")
    monkeypatch.setenv("JOBQUEUE_QUOTA_TEAM_OVERRIDES", '{"risk": {"max_queued": 500, "max_input_rows": 0}}')
    s = load_settings()
    assert limits(s, "alice", "growth") == {
        "max_queued_per_owner": ("alice", 20, "JOBQUEUE_QUOTA_MAX_QUEUED_PER_OWNER"),
        "max_queued_per_team": ("growth", 200, "JOBQUEUE_QUOTA_MAX_QUEUED_PER_TEAM"),
        "max_input_rows": ("growth", 1000, "JOBQUEUE_QUOTA_MAX_INPUT_ROWS")}
    assert limits(s, "alice", "risk") == {  # no rows limit for risk: its override says 0
        "max_queued_per_owner": ("alice", 20, "JOBQUEUE_QUOTA_MAX_QUEUED_PER_OWNER"),
        "max_queued_per_team": ("risk", 500, 'JOBQUEUE_QUOTA_TEAM_OVERRIDES["risk"].max_queued')}
    assert limits(s, None, None) == {"max_input_rows": ("", 1000, "JOBQUEUE_QUOTA_MAX_INPUT_ROWS")}
    check_input_rows(quotas_for(s, "alice", "growth"), 1000)
    with pytest.raises(Exception, match="the input has 1001 rows, the limit is 1000") as info:
        check_input_rows(quotas_for(s, "alice", "growth"), 1001)
    assert info.value.quota == QuotaKind.INPUT_ROWS.value  # type: ignore[attr-defined]
    s = s.model_copy(update={"redis_url": "redis://x:1/0"})
    restored = Settings(**{k.removeprefix("JOBQUEUE_").lower(): v for k, v in s.to_env().items()})
    assert restored.quota_team_overrides == s.quota_team_overrides  # to_env writes JSON, as the environment gives it


def test_no_quota_by_default(tmp_path):
    assert quotas_for(Settings(home=tmp_path), "alice", "risk") == []


@pytest.mark.parametrize("overrides", ['{"Risk": {"max_queued": 1}}', '{"risk": {"max_queud": 1}}',
                                       '{"risk": {"max_queued": -1}}', "not json"])
def test_bad_overrides_are_refused(overrides, monkeypatch, tmp_path):
    monkeypatch.setenv("JOBQUEUE_HOME", str(tmp_path))
    monkeypatch.setenv("JOBQUEUE_QUOTA_TEAM_OVERRIDES", overrides)
    with pytest.raises(SettingsError, match="JOBQUEUE_QUOTA_TEAM_OVERRIDES") as info:
        load_settings()
    assert info.value.variables == ("JOBQUEUE_QUOTA_TEAM_OVERRIDES",)


def test_oidc_needs_an_audience_and_asymmetric_algorithms(tmp_path):
    issuer = "https://login.example.com"
    with pytest.raises(SettingsError, match="JOBQUEUE_OIDC_AUDIENCE must be set"):
        Settings(home=tmp_path, oidc_issuer=issuer)
    for algorithms in ("HS256", "none", "RS256,HS512", " , "):
        with pytest.raises(SettingsError, match="JOBQUEUE_OIDC_ALGORITHMS"):
            Settings(home=tmp_path, oidc_issuer=issuer, oidc_audience="jq", oidc_algorithms=algorithms)
    s = Settings(home=tmp_path, oidc_issuer=issuer, oidc_audience="jq", oidc_algorithms="ES256, EdDSA")
    assert s.oidc_algorithm_list == ["ES256", "EdDSA"]
    assert Settings(home=tmp_path, oidc_algorithms="HS256").oidc_issuer == ""  # OIDC off: nothing to check
