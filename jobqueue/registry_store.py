"""The feature registry served from Redis: immutable versions, the current one, and a cache of parsed ones.

    store = RegistryStore(redis, keys)
    applied = await store.apply(load_registry(path), applied_by="alice")   # -> version 3-9f8e7d6c5b4a
    registry = await store.registry(job.registry_version)                   # what a consumer plans with

`apply` stores a validated registry as the next version and makes it current, in one script; content equal
to the current version's (same hash) stores nothing and returns the current version (`created=False`). Content
equal to an older version is a new version: a roll-back is an apply like any other, and history shows it.
Versions are never changed or expired, so a parsed one is cached by its id for the life of the process.

This class is the seam the HTTP API calls (apply is an admin operation there); the CLI calls it directly.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

from redis.asyncio import Redis

from jobqueue.errors import RegistryVersionNotFound
from jobqueue.keys import Keys
from jobqueue.lookup_cache import LookupCache
from jobqueue.registry import Registry
from jobqueue.registry_versions import SEPARATOR, RegistryVersion, parse_version_ref, version_id

# KEYS[1] <p>registry-versions, KEYS[2] <p>registry-current. ARGV[1] the content hash, ARGV[2] the version's JSON
# (without its number), ARGV[3] the separator of a version id. When the current version has this hash, returns
# {its id, 0}; else stores the version under the next number, makes it current and returns {its id, 1}.
APPLY = """
local cur = redis.call('GET', KEYS[2])
local tail = ARGV[3] .. ARGV[1]
if cur and string.sub(cur, -#tail) == tail then return {cur, 0} end
local n = redis.call('HLEN', KEYS[1]) + 1
while redis.call('HEXISTS', KEYS[1], tostring(n)) == 1 do n = n + 1 end
redis.call('HSET', KEYS[1], tostring(n), ARGV[2])
local id = tostring(n) .. tail
redis.call('SET', KEYS[2], id)
return {id, 1}
"""
CACHED_VERSIONS = 16
CURRENT = "registry_current"  # its name in the LookupCache


@dataclass(frozen=True)
class Applied:
    version: RegistryVersion
    created: bool  # False: the content was the current version's; nothing was stored


class RegistryStore:
    """Registry versions in Redis for one environment. Holds its Redis client, keys and the parsed-version cache."""

    def __init__(self, redis: Redis, keys: Keys, lookups: LookupCache | None = None) -> None:
        self.redis = redis
        self.keys = keys
        self.lookups = lookups or LookupCache()  # the current id, reused for its `seconds` (0: never)
        self._apply = redis.register_script(APPLY)
        self._parsed: OrderedDict[str, Registry] = OrderedDict()

    async def apply(self, registry: Registry, applied_by: str | None = None) -> Applied:
        """Store `registry` (already validated: `parse_registry`) as the current version, unless it is already."""
        candidate = RegistryVersion.of(registry, datetime.now(UTC), applied_by)
        reply = await self._apply(keys=[self.keys.registry_versions, self.keys.registry_current],
                                  args=[candidate.hash, candidate.stored_json(), SEPARATOR])
        vid, created = _text(reply[0]), bool(int(reply[1]))
        self.lookups.forget(CURRENT)  # this process sees its own apply at once
        number, _ = parse_version_ref(vid)
        if created:
            return Applied(candidate.model_copy(update={"number": number}), True)
        return Applied(await self.version(vid), False)

    async def current_id(self) -> str | None:
        return await self.lookups.get(CURRENT, self._read_current_id)

    async def _read_current_id(self) -> str | None:
        raw = await self.redis.get(self.keys.registry_current)
        return _text(raw) if raw is not None else None

    async def current(self) -> RegistryVersion | None:
        vid = await self.current_id()
        return await self.version(vid) if vid else None

    async def version(self, ref: str) -> RegistryVersion:
        """A version by number (`3`) or id (`3-9f8e7d6c5b4a`); `RegistryVersionNotFound` when there is none, or
        when the stored version by that number holds other content than the id says."""
        number, digest = parse_version_ref(ref)
        raw = await cast(Awaitable[bytes | None], self.redis.hget(self.keys.registry_versions, str(number)))
        if raw is None:
            raise RegistryVersionNotFound(f"no registry version {ref} in Redis (`jobqueue registry history` lists "
                                          "the versions)")
        version = RegistryVersion.from_stored(number, raw)
        if digest is not None and version.hash != digest:
            raise RegistryVersionNotFound(f"no registry version {ref} in Redis: version {number} there is "
                                          f"{version.id}, other content")
        return version

    async def history(self) -> list[RegistryVersion]:
        """Every version, oldest first."""
        raw = await cast(Awaitable[dict[bytes, bytes]], self.redis.hgetall(self.keys.registry_versions))
        return sorted((RegistryVersion.from_stored(int(n), v) for n, v in raw.items()), key=lambda v: v.number)

    async def registry(self, vid: str) -> Registry:
        """The parsed registry of version `vid` (a full id), from the cache or Redis; `RegistryVersionNotFound`
        names it when Redis has no such version."""
        cached = self._parsed.get(vid)
        if cached is not None:
            self._parsed.move_to_end(vid)
            return cached
        number, digest = parse_version_ref(vid)
        if digest is None:  # only a full id is immutable: a number alone is not cached
            return (await self.version(vid)).registry()
        registry = (await self.version(vid)).registry()
        self._parsed[version_id(number, digest)] = registry
        while len(self._parsed) > CACHED_VERSIONS:
            self._parsed.popitem(last=False)
        return registry


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
