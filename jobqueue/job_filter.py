"""Which jobs a listing shows: by group, state and attribution; a sharded query as its parent, its shards only when
asked (`parent`, `shards`). Pure, no I/O.

`jobqueue jobs --owner alice --tag project=churn` builds one; the API's job list and a `user` token's view
(`jobqueue.auth.policy.visible_jobs`) will narrow it the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from jobqueue.models import JobRecord, JobStatus


@dataclass(frozen=True)
class JobFilter:
    """Every condition given must hold (an empty filter matches every job)."""

    group: str | None = None
    state: JobStatus | None = None
    owner: str | None = None
    team: str | None = None
    query_name: str | None = None
    tags: dict[str, str] = field(default_factory=dict)  # each tag must be present with this value
    # A sharded query is listed as its parent; its shards only when asked: `parent` (that query's shards) or
    # `shards` (every job, shards too).
    parent: str | None = None
    shards: bool = False

    @property
    def narrows(self) -> bool:
        """Whether the filter can leave out jobs other than shards (a listing then reads further back to fill its
        page)."""
        return any((self.group, self.state, self.owner, self.team, self.query_name, self.tags, self.parent))

    @property
    def lists_shards(self) -> bool:
        return self.shards or self.parent is not None

    def matches(self, record: JobRecord) -> bool:
        return ((self.group is None or record.resource_group == self.group)
                and (self.state is None or record.status is self.state)
                and (self.owner is None or record.owner == self.owner)
                and (self.team is None or record.team == self.team)
                and (self.query_name is None or record.query_name == self.query_name)
                and all(record.tags.get(k) == v for k, v in self.tags.items())
                and (self.parent is None or record.parent_id == self.parent)
                and (self.lists_shards or record.parent_id is None))
