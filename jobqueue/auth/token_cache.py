"""`VerifiedTokens`: the API's bearer authentication with the identities of recently verified `jq_` tokens kept for
JOBQUEUE_API_TOKEN_CACHE_SECONDS, so that a client calling many times a second costs one Redis read a second, not
one per request.

    auth = VerifiedTokens(BearerAuthenticator.from_settings(settings, tokens), seconds=1.0)
    found = await auth.verify(token)      # Identity, or Refusal saying why

The bound: a token revoked (or expired) is refused at most `seconds` after that, by every API process. Only
accepted `jq_` tokens are kept (a refusal is asked again every time, so a new or fixed token works at once); JWTs are
not kept (their expiry is in the token, and the OIDC verifier caches its keys). The key is the token's SHA-256, never
the token. 0 seconds: every request reads Redis.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from jobqueue.auth.identity import Identity
from jobqueue.auth.oidc import BearerAuthenticator, OidcVerifier, Refusal
from jobqueue.auth.tokens import TOKEN_PREFIX, token_sha256

MAX_ENTRIES = 10_000  # tokens kept at once; past it, the cache starts over (only a miss more for each)


class VerifiedTokens:
    def __init__(self, auth: BearerAuthenticator, seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.auth = auth
        self.seconds = seconds
        self.clock = clock
        self._kept: dict[str, tuple[Identity, float]] = {}  # sha256 of the token -> (identity, kept until)

    @property
    def oidc(self) -> OidcVerifier | None:
        """The OIDC verifier behind (its key cache serves the console's sign-in too)."""
        return self.auth.oidc

    async def verify(self, token: str | None) -> Identity | Refusal:
        text = (token or "").strip()
        if self.seconds <= 0 or not text.startswith(f"{TOKEN_PREFIX}_"):
            return await self.auth.verify(token)
        key = token_sha256(text)
        kept = self._kept.get(key)
        now = self.clock()
        if kept is not None and now < kept[1]:
            return kept[0]
        found = await self.auth.verify(text)
        if isinstance(found, Identity):
            if len(self._kept) >= MAX_ENTRIES:
                self._kept = {k: v for k, v in self._kept.items() if v[1] > now}
                if len(self._kept) >= MAX_ENTRIES:
                    self._kept.clear()
            self._kept[key] = (found, now + self.seconds)
        else:
            self._kept.pop(key, None)
        return found
