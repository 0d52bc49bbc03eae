"""Roles and identities: who a request is made by. Pure data, no I/O."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Role(enum.StrEnum):
    """What a token may do, each role everything of the one before (`jobqueue.auth.policy`)."""

    USER = "user"  # submits; sees and cancels its own jobs (or its team's, if configured)
    OPERATOR = "operator"  # sees and cancels every job; runs, pauses and resumes schedules
    ADMIN = "admin"  # also manages tokens and applies the registry

    @property
    def rank(self) -> int:
        return list(Role).index(self)


@dataclass(frozen=True)
class Identity:
    """An authenticated caller: from an API token (its id in `token_id`), later an OIDC token."""

    owner: str
    team: str | None
    role: Role
    token_id: str | None = None
