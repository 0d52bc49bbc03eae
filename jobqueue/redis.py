"""`connect_redis`: the one way every process gets its Redis client (I/O: opens the connection pool lazily).

Small on purpose: the manager and the consumers import it without loading the SDK (and pyarrow).
"""

from __future__ import annotations

from arq.connections import ArqRedis
from redis.asyncio import ConnectionPool

from jobqueue import serializer
from jobqueue.settings import Settings


def connect_redis(settings: Settings) -> ArqRedis:
    """An arq-capable Redis client using the JSON serializer (never pickle)."""
    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    pool = ConnectionPool.from_url(
        settings.resolved_redis_url(), health_check_interval=30, socket_keepalive=True, password=password
    )
    client = ArqRedis(pool, job_serializer=serializer.dumps, job_deserializer=serializer.loads)
    client.auto_close_connection_pool = True  # aclose() also closes the pool's connections
    return client
