"""OIDC bearer tokens (issue 15): JWTs of the configured issuer, checked against the signing keys (JWKS) this test
serves over real HTTP, map to an identity; each way a JWT is wrong is refused naming the fix; a rotated key works
on its first token; `jq_` API tokens go through the same authenticator."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from jobqueue.auth.identity import Identity, Role
from jobqueue.auth.jwks import JwksCache
from jobqueue.auth.oidc import BearerAuthenticator, OidcConfig, OidcVerifier, Refusal, RefusalReason
from jobqueue.auth.tokens import TokenStore
from jobqueue.keys import Keys
from jobqueue.redis import connect_redis
from tests.oidc_provider import AUDIENCE, IdentityProvider

__all__ = ["AUDIENCE", "IdentityProvider", "idp"]  # the issuer and its fixture, for other tests


@pytest.fixture
def idp() -> Iterator[IdentityProvider]:
    provider = IdentityProvider()
    provider.add_key("k1")
    yield provider
    provider.close()


def verifier(idp: IdentityProvider, **changes: Any) -> OidcVerifier:
    config = OidcConfig(issuer=idp.issuer, jwks_url="", audience=AUDIENCE, owner_claim="preferred_username",
                        team_claim="team", role_claim="jobqueue_role", algorithms=("RS256", "ES256"))
    keys = JwksCache(idp.issuer, min_refresh=10.0, clock=changes.pop("clock", time.monotonic))
    return OidcVerifier(OidcConfig(**{**config.__dict__, **changes}), keys)


def refused(found: Identity | Refusal, reason: RefusalReason, *texts: str) -> None:
    assert isinstance(found, Refusal), found
    assert found.reason is reason, found
    for text in texts:
        assert text in found.message, found.message


async def test_a_valid_jwt_is_an_identity_with_owner_team_and_role(idp):
    idp.add_key("ec1", "EC")
    v = verifier(idp)  # the JWKS URL discovered from the issuer
    assert await v.verify(idp.token()) == Identity(owner="alice", team="risk", role=Role.USER)
    assert await v.verify(idp.token(jobqueue_role="operator")) == Identity("alice", "risk", Role.OPERATOR)
    assert await v.verify(idp.token(jobqueue_role=["user", "admin"], team=["growth"])) == Identity(
        "alice", "growth", Role.ADMIN)
    assert (await v.verify(idp.token(jobqueue_role="root", team=None))) == Identity("alice", None, Role.USER)
    assert await v.verify(idp.token("ec1", preferred_username="bob@example.com")) == Identity(
        "bob@example.com", "risk", Role.USER)
    machine = verifier(idp, owner_claim="sub")
    assert (await machine.verify(idp.token(preferred_username=None))).owner == "0f6c2d"  # type: ignore[union-attr]


async def test_each_wrong_jwt_is_refused_naming_the_fix(idp):
    v = verifier(idp)
    now = int(time.time())
    refused(await v.verify(idp.token(exp=now - 3600, iat=now - 7200)), RefusalReason.EXPIRED, "expired",
            "sign in again")
    refused(await v.verify(idp.token(iss="https://evil.example")), RefusalReason.WRONG_ISSUER,
            "'https://evil.example'", idp.issuer, "JOBQUEUE_OIDC_ISSUER")
    refused(await v.verify(idp.token(aud="another-app")), RefusalReason.WRONG_AUDIENCE, "'another-app'",
            "JOBQUEUE_OIDC_AUDIENCE", AUDIENCE)
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    refused(await v.verify(idp.token("k9", signer=stranger)), RefusalReason.UNKNOWN_KEY, "'k9'", "does not list",
            "JOBQUEUE_OIDC_JWKS_URL")
    refused(await v.verify(idp.token("k1", signer=stranger)), RefusalReason.BAD_SIGNATURE, "does not verify")
    refused(await v.verify(idp.token(preferred_username=None)), RefusalReason.MISSING_CLAIM, "'preferred_username'",
            "JOBQUEUE_OIDC_OWNER_CLAIM", "`sub`")
    refused(await v.verify(idp.token(team=["risk", "growth"])), RefusalReason.BAD_CLAIM, "JOBQUEUE_OIDC_TEAM_CLAIM")
    refused(await v.verify(idp.token(preferred_username="al ice")), RefusalReason.BAD_CLAIM, "not a valid owner")
    refused(await v.verify(idp.token(exp=None)), RefusalReason.MISSING_CLAIM, "'exp'")
    refused(await v.verify(idp.token(nbf=now + 3600)), RefusalReason.NOT_YET_VALID, "clock")
    hs = jwt.encode({"iss": idp.issuer, "aud": AUDIENCE, "exp": now + 60}, "shared-secret-of-32-bytes-or-more!!",
                    algorithm="HS256", headers={"kid": "k1"})
    refused(await v.verify(hs), RefusalReason.ALGORITHM, "'HS256'", "JOBQUEUE_OIDC_ALGORITHMS")
    refused(await v.verify("not.a-jwt"), RefusalReason.MALFORMED, "jq_")


async def test_a_rotated_key_works_on_its_first_token_and_unknown_ids_do_not_hammer_the_issuer(idp):
    now = [0.0]
    v = verifier(idp, clock=lambda: now[0])
    assert isinstance(await v.verify(idp.token()), Identity)
    assert idp.jwks_requests == 1
    assert isinstance(await v.verify(idp.token()), Identity)
    assert idp.jwks_requests == 1  # cached
    now[0] += 10  # past min_refresh: a new key id may be looked for
    idp.add_key("k2")  # the issuer rotates: a key the cache has not seen
    assert await v.verify(idp.token("k2", preferred_username="carol")) == Identity("carol", "risk", Role.USER)
    assert idp.jwks_requests == 2
    now[0] += 5
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for i in range(5):  # made-up key ids within min_refresh: one fetch at most
        refused(await v.verify(idp.token(f"bogus{i}", signer=stranger)), RefusalReason.UNKNOWN_KEY)
    assert idp.jwks_requests == 2
    now[0] += 300  # past the TTL: fetched again, the keys still good
    assert isinstance(await v.verify(idp.token("k2")), Identity)
    assert idp.jwks_requests == 3


async def test_unreachable_keys_are_a_503_refusal_naming_the_url(idp):
    v = verifier(idp, jwks_url=idp.issuer + "/nowhere")
    v.keys.jwks_url = idp.issuer + "/nowhere"
    found = await v.verify(idp.token())
    refused(found, RefusalReason.KEYS_UNAVAILABLE, "/nowhere", "JOBQUEUE_OIDC_JWKS_URL")
    assert isinstance(found, Refusal) and found.status == 503


async def test_api_tokens_and_jwts_go_through_one_authenticator(idp, settings):
    redis = connect_redis(settings)
    try:
        store = TokenStore(redis, Keys.for_environment(settings.environment))
        token, info = await store.create("dave", Role.OPERATOR, "risk")
        with_oidc = settings.model_copy(update={"oidc_issuer": idp.issuer, "oidc_audience": AUDIENCE})
        auth = BearerAuthenticator.from_settings(with_oidc, store)
        assert await auth.verify(token) == Identity("dave", "risk", Role.OPERATOR, token_id=info.token_id)
        assert await auth.verify(idp.token(jobqueue_role="admin")) == Identity("alice", "risk", Role.ADMIN)
        refused(await auth.verify(None), RefusalReason.MISSING, "Authorization: Bearer")
        refused(await auth.verify(token[:-2] + "xx"), RefusalReason.UNKNOWN)
        await store.revoke(info.token_id)
        refused(await auth.verify(token), RefusalReason.REVOKED, "revoked")
        without = BearerAuthenticator.from_settings(settings, store)  # JOBQUEUE_OIDC_ISSUER unset
        refused(await without.verify(idp.token()), RefusalReason.OIDC_OFF, "JOBQUEUE_OIDC_ISSUER")
    finally:
        await redis.aclose()
