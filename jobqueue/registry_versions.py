"""Registry versions as data: what `jobqueue registry apply` stores, and how a version is named. Pure, no I/O.

A version is the validated registry as a normalized document (`document_of`: the registry-file form, local
paths already absolute, defaults left out), its content hash, and who applied it when. Its id is
`<number>-<hash>`: the number counts applies in the environment (1, 2, ...), the hash (the first 12 hex digits
of the SHA-256 of the document's canonical JSON) says what it holds, so a job that pins `3-9f8e7d6c5b4a` can
never be run on anything else, even if the environment's versions were wiped and re-applied.

Two registry files that differ only in comments, layout, key order or a default written out have the same
document, hence the same hash.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import AwareDatetime, BaseModel, ConfigDict

from jobqueue.registry import Registry, parse_registry

SEPARATOR = "-"  # between the number and the hash of a version id
HASH_DIGITS = 12
_REF_RE = re.compile(rf"^(\d+)(?:{SEPARATOR}([0-9a-f]{{{HASH_DIGITS}}}))?$")


def document_of(registry: Registry) -> dict[str, Any]:
    """The registry in its file form (`namespaces: {name: {primary_key, sources}}`), without defaults."""
    return {"namespaces": {name: ns.model_dump(mode="json", exclude={"name"}, exclude_defaults=True)
                           for name, ns in registry.namespaces.items()}}


def content_hash(document: dict[str, Any]) -> str:
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:HASH_DIGITS]


def version_id(number: int, digest: str) -> str:
    return f"{number}{SEPARATOR}{digest}"


def parse_version_ref(text: str) -> tuple[int, str | None]:
    """A version as the user or a job names it: `3`, or the full id `3-9f8e7d6c5b4a` -> (3, hash or None)."""
    m = _REF_RE.match(text.strip())
    if not m or int(m.group(1)) == 0:
        raise ValueError(f"{text!r} is not a registry version: a number (3) or a version id "
                         f"(3{SEPARATOR}9f8e7d6c5b4a, as `jobqueue registry history` shows)")
    return int(m.group(1)), m.group(2)


class RegistryVersion(BaseModel):
    """One applied registry: the JSON value of <p>registry-versions (without `number`, which is its field)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    number: int
    hash: str
    applied_at: AwareDatetime
    applied_by: str | None = None
    origin: str  # the file it was applied from
    document: dict[str, Any]

    @classmethod
    def of(cls, registry: Registry, applied_at: datetime, applied_by: str | None, number: int = 0) -> RegistryVersion:
        document = document_of(registry)
        return cls(number=number, hash=content_hash(document), applied_at=applied_at, applied_by=applied_by,
                   origin=registry.origin, document=document)

    @property
    def id(self) -> str:
        return version_id(self.number, self.hash)

    @property
    def namespace_count(self) -> int:
        return len(self.document["namespaces"])

    @property
    def feature_count(self) -> int:
        return sum(len(src.get("features", {})) + len(src.get("aggregations", {}))
                   for ns in self.document["namespaces"].values() for src in ns.get("sources", []))

    def stored_json(self) -> str:
        return self.model_dump_json(exclude={"number"})

    @classmethod
    def from_stored(cls, number: int, raw: str | bytes) -> RegistryVersion:
        return cls.model_validate({**json.loads(raw), "number": number})

    def registry(self) -> Registry:
        """The registry this version holds; errors name the version and the file it came from."""
        return parse_registry(self.document, Path("/"), f"registry version {self.id} (applied from {self.origin})")

    def to_yaml(self) -> str:
        """The version as a registry file that `jobqueue registry apply` takes back unchanged."""
        head = (f"# registry version {self.id}, applied {self.applied_at.isoformat()}"
                + (f" by {self.applied_by}" if self.applied_by else "") + f" from {self.origin}\n")
        return head + yaml.safe_dump(self.document, sort_keys=False, allow_unicode=True)
