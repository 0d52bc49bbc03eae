"""Who a job is for and what it is: owner, team, tags, query name and correlation id. Pure, no I/O.

Every job carries an `Attribution`. It travels in the `QueryJob` payload, is stored in the job record, and is
copied into the performance summary and the consumer's log context. Every value has a bounded size and a
plain character set, because they end up in log lines, CLI tables, filters and (the team only) a
Prometheus label. `check_attribution` refuses a bad value with an `InvalidQueryError` that names the field
and says how to fix it, before anything is staged.

The defaults: the owner is the OS user (the SDK's direct, "trusted" mode; the API will set it from the
token), the team is `JOBQUEUE_TEAM` (none when unset), and a correlation id is generated.
"""

from __future__ import annotations

import getpass
import re
import uuid
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from jobqueue.errors import InvalidQueryError

# owners may be e-mail addresses (OIDC subjects) or OS user names
OWNER_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.@+-]{0,127}$"
TEAM_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"  # a Prometheus label value: short and tame
QUERY_NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,127}$"
CORRELATION_ID_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.:/+=-]{0,127}$"
TAG_KEY_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]{0,62}$"
MAX_TAGS = 32
MAX_TAG_VALUE_CHARS = 256

OwnerName = Annotated[str, StringConstraints(pattern=OWNER_PATTERN)]
TeamName = Annotated[str, StringConstraints(pattern=TEAM_PATTERN)]
QueryName = Annotated[str, StringConstraints(pattern=QUERY_NAME_PATTERN)]
CorrelationId = Annotated[str, StringConstraints(pattern=CORRELATION_ID_PATTERN)]
TagKey = Annotated[str, StringConstraints(pattern=TAG_KEY_PATTERN)]
TagValue = Annotated[str, StringConstraints(max_length=MAX_TAG_VALUE_CHARS)]
Tags = Annotated[dict[TagKey, TagValue], Field(max_length=MAX_TAGS)]

_FIXES = {
    "owner": (OWNER_PATTERN, "letters, digits, '_', '.', '@', '+' or '-', at most 128 characters"),
    "team": (TEAM_PATTERN, "lowercase letters, digits, '_' or '-', starting with a letter or digit, at most 63 "
             "characters"),
    "query_name": (QUERY_NAME_PATTERN, "letters, digits, '_', '.', ':' or '-', at most 128 characters"),
    "correlation_id": (CORRELATION_ID_PATTERN, "letters, digits and '_.:/+=-', at most 128 characters"),
}


class Attribution(BaseModel):
    """The attribution of one job (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    owner: OwnerName | None = None
    team: TeamName | None = None
    tags: Tags = Field(default_factory=dict)
    query_name: QueryName | None = None
    correlation_id: CorrelationId | None = None


FIELDS = tuple(Attribution.model_fields)  # the same names on QueryJob, JobRecord and PerformanceSummary


def log_context(job: object) -> dict[str, Any]:
    """The attribution of a job (any object with the `FIELDS`) that a consumer binds into its log context next to
    `job_id`: only the fields that are set."""
    return {name: value for name in FIELDS if (value := getattr(job, name, None))}


def default_owner() -> str:
    """The OS user, as an owner name (characters an owner cannot have become '_'); `unknown` without one."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
    cleaned = re.sub(r"[^A-Za-z0-9_.@+-]", "_", user)[:128]
    return cleaned if re.match(OWNER_PATTERN, cleaned) else "unknown"


def new_correlation_id() -> str:
    return uuid.uuid4().hex


def check_attribution(
    owner: object = None, team: object = None, tags: object = None, query_name: object = None,
    correlation_id: object = None,
) -> Attribution:
    """The attribution of a submission, each value checked; `InvalidQueryError` names the bad field and the fix.
    Nothing is defaulted here (the SDK does that)."""
    for name, value in (("owner", owner), ("team", team), ("query_name", query_name),
                        ("correlation_id", correlation_id)):
        if value is None:
            continue
        pattern, allowed = _FIXES[name]
        if not isinstance(value, str) or not re.match(pattern, value):
            raise InvalidQueryError(name, f"{_shown(value)} is not a valid {name}; use {allowed}")
    checked_tags = check_tags(tags)
    return Attribution.model_validate({"owner": owner, "team": team, "tags": checked_tags, "query_name": query_name,
                                       "correlation_id": correlation_id})


def check_tags(tags: object) -> dict[str, str]:
    if tags is None:
        return {}
    if not isinstance(tags, Mapping):
        raise InvalidQueryError("tags", f"must be a mapping of tag name to text, got {type(tags).__name__}")
    if len(tags) > MAX_TAGS:
        raise InvalidQueryError("tags", f"has {len(tags)} tags; at most {MAX_TAGS} are kept per job")
    for key, value in tags.items():
        if not isinstance(key, str) or not re.match(TAG_KEY_PATTERN, key):
            raise InvalidQueryError(f"tags[{_shown(key)}]", "is not a valid tag name; use letters, digits, '_', '.' "
                                    "or '-', starting with a letter or '_', at most 63 characters")
        if not isinstance(value, str):
            raise InvalidQueryError(f"tags[{key!r}]", f"value must be text, got {type(value).__name__} "
                                    f"(write it as a string, e.g. {str(value)[:20]!r})")
        if len(value) > MAX_TAG_VALUE_CHARS:
            raise InvalidQueryError(f"tags[{key!r}]", f"value is {len(value)} characters; at most "
                                    f"{MAX_TAG_VALUE_CHARS} are kept")
    return dict(tags)


def parse_tag_filters(items: list[str]) -> dict[str, str]:
    """`--tag k=v` options as a mapping; `InvalidQueryError` for one without '='."""
    found: dict[str, str] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise InvalidQueryError("--tag", f"{item!r} must be NAME=VALUE, e.g. --tag project=churn")
        found[key] = value
    return found


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
