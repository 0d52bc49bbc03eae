"""What the signed-in person may do on the console's pages that are not about one job: the API's own policy
(`authorize`), answered as an error page (403) rather than the API's JSON."""

from __future__ import annotations

from jobqueue.api.deps import Services
from jobqueue.auth.identity import Identity
from jobqueue.auth.policy import Action, authorize
from jobqueue.console.web import PageError


def can(identity: Identity, action: Action, svc: Services) -> bool:
    return authorize(identity, action, None, None, svc.rules).allowed


def require(identity: Identity, action: Action, svc: Services) -> None:
    """A 403 page naming what is missing, unless the policy allows `action` (not about a job: nothing to conceal)."""
    decision = authorize(identity, action, None, None, svc.rules)
    if not decision.allowed:
        raise PageError(403, decision.reason)
