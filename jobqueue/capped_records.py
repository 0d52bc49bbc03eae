"""Records with a TTL whose number at once is capped, in Redis: each record is a key of its own, and its scope (every
OIDC sign-in under way, `jobqueue.console.oidc_signin`; one owner's upload references, `jobqueue.upload_store`) is a
zset of member -> expiry ms. One script trims the expired members, counts the rest and stores the record only below
the cap, so that concurrent stores never pass it together. I/O: Redis only; writes no job state.

    capped = CappedRecords(redis)
    stored, held = await capped.store(key, value, scope, member, ttl_ms=600_000, cap=10_000)
"""

from __future__ import annotations

import time

from redis.asyncio import Redis

# KEYS: the record's key, its scope's zset. ARGV: the value, now (ms), TTL (ms), the cap (0: none), the member.
# {1, held before}: stored (a key of that name already there is kept: SET NX); {0, held}: the cap is reached, nothing
# is written.
STORE_UNDER_CAP = """
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[2])
local held = redis.call('ZCARD', KEYS[2])
if tonumber(ARGV[4]) > 0 and held >= tonumber(ARGV[4]) then
  return {0, held}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3], 'NX')
redis.call('ZADD', KEYS[2], tonumber(ARGV[2]) + tonumber(ARGV[3]), ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return {1, held}
"""


class CappedRecords:
    def __init__(self, redis: Redis) -> None:
        self._store = redis.register_script(STORE_UNDER_CAP)

    async def store(self, key: str, value: str, scope: str, member: str, ttl_ms: int, cap: int,
                    now_ms: int | None = None) -> tuple[bool, int]:
        """Store `value` at `key` for `ttl_ms`, as `member` of `scope`, unless `scope` holds `cap` unexpired members
        already (0: no cap). (stored, how many it held before)."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        stored, held = await self._store(keys=[key, scope], args=[value, now, ttl_ms, cap, member])
        return bool(stored), int(held)
