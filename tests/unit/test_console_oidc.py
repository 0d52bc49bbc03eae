"""The console's OIDC sign-in, pure parts: the PKCE challenge (RFC 7636's own example) and its settings."""

from __future__ import annotations

import pytest

from jobqueue.console.oidc_signin import browser_signin_on, code_challenge
from jobqueue.errors import SettingsError
from jobqueue.settings import Settings


def test_the_pkce_challenge_is_rfc_7636_s256():
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"  # RFC 7636, appendix B
    assert code_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_browser_sign_in_needs_the_issuer_and_a_client_id_and_says_which_setting_is_wrong():
    base = {"oidc_issuer": "https://login.example.com", "oidc_audience": "jobqueue-api"}
    assert not browser_signin_on(Settings(**base))
    on = Settings(**base, oidc_client_id="jobqueue-console", oidc_client_secret="s")
    assert browser_signin_on(on) and "s" not in repr(on.oidc_client_secret)
    with pytest.raises(SettingsError, match="JOBQUEUE_OIDC_CLIENT_ID is set without JOBQUEUE_OIDC_ISSUER"):
        Settings(oidc_client_id="jobqueue-console")
    with pytest.raises(SettingsError, match="JOBQUEUE_OIDC_REDIRECT_URL"):
        Settings(**base, oidc_client_id="c", oidc_redirect_url="/signin/oidc/callback")
