"""Object storage over a real S3 HTTP API (moto): staging, results and Parquet sources on S3."""

from __future__ import annotations

import boto3
import pyarrow.parquet as pq
import pytest
import yaml

from jobqueue import AsyncJobQueueClient, JobFailedError, JobStatus
from jobqueue.sample import sample_input
from tests.helpers import eventually, running_manager, with_groups
from tests.reference import assert_same, reference

OUTPUT = ["user.f0", "user.logins", "user.txn_sum_30d"]


def s3_client(settings):
    return boto3.client("s3", endpoint_url=settings.s3_endpoint_url, region_name="us-east-1",
                        aws_access_key_id="test", aws_secret_access_key="test")


def upload_store(settings, store, bucket, tmp_path, missing: str | None = None):
    """Copy the sample store's Parquet to S3 and write a registry whose sources point there."""
    s3 = s3_client(settings)
    for f in store.root.rglob("*.parquet"):
        s3.upload_file(str(f), bucket, f"store/{f.relative_to(store.root)}")
    registry = store.read_registry()
    for src in registry["namespaces"]["user"]["sources"]:
        src["path"] = f"s3://{bucket}/store/{src['path']}" + ("-gone" if src["name"] == missing else "")
    path = tmp_path / "registry-s3.yaml"
    path.write_text(yaml.safe_dump(registry))
    return path


async def test_sources_staging_and_results_on_s3(s3_settings, store, s3_bucket, tmp_path):
    registry = upload_store(s3_settings, store, s3_bucket, tmp_path)
    settings = with_groups(s3_settings, tmp_path, {"default": {"max_instances": 2}}, registry_path=registry)
    inputs = [sample_input(store.users, 2_000, seed=s) for s in (5, 6)]
    async with running_manager(settings), AsyncJobQueueClient(settings) as client:
        jobs = [await client.offline_query(ids, OUTPUT, times) for ids, times in inputs]
        for job, (ids, times) in zip(jobs, inputs, strict=True):
            record = await job.wait(timeout=60, show_progress=False)
            assert record.result_uri == f"s3://{s3_bucket}/results/{settings.environment}/{job.id}/result.parquet"
            assert_same(await job.to_pandas(), reference(store, ids["user.id"], times, OUTPUT))
            rows_read = {name: f["rows_read"] for name, f in job.performance_summary.sources.items()}
            assert all(n and n > 0 for n in rows_read.values()), rows_read
            assert all(f["bytes_scanned"] > 0 for f in job.performance_summary.sources.values())
    keys = [o["Key"] for o in s3_client(settings).list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert sorted(k for k in keys if k.startswith("results/")) == sorted(
        f"results/{settings.environment}/{j.id}/result.parquet" for j in jobs)
    assert not [k for k in keys if k.startswith("staging/")
            and k not in ("staging/", f"staging/{settings.environment}/")], "staged inputs are removed"
    assert not any(settings.spill_root.glob("result-*")), "local copies of uploaded results are removed"


async def test_missing_s3_object_fails_clearly_and_the_consumer_carries_on(s3_settings, store, s3_bucket, tmp_path):
    registry = upload_store(s3_settings, store, s3_bucket, tmp_path, missing="user_activity")
    settings = with_groups(s3_settings, tmp_path, {"default": {"max_instances": 1}}, registry_path=registry)
    async with running_manager(settings) as backend, AsyncJobQueueClient(settings) as client:
        bad = await client.offline_query({"user.id": [1]}, ["user.logins"])
        with pytest.raises(JobFailedError) as info:
            await bad.wait(timeout=60, show_progress=False)
        assert info.value.record.attempts == 1  # a missing object is not retried
        assert f"s3://{s3_bucket}/store/user_activity-gone does not exist" in info.value.record.error
        (consumer,) = await eventually(lambda: backend.active("default"), what="consumer")
        good = await client.offline_query({"user.id": [1]}, ["user.f0"])
        assert (await good.wait(timeout=60, show_progress=False)).status is JobStatus.SUCCEEDED
        assert consumer.process.poll() is None


async def test_a_repeated_query_reads_its_s3_sources_from_the_scan_cache(s3_settings, store, s3_bucket, tmp_path):
    registry = upload_store(s3_settings, store, s3_bucket, tmp_path)
    settings = with_groups(s3_settings, tmp_path, {"default": {"max_instances": 1}}, registry_path=registry,
                           table_scan_cache_bytes=64 << 20)
    ids, times = sample_input(store.users, 2_000, seed=9)
    async with running_manager(settings), AsyncJobQueueClient(settings) as client:
        first = await client.offline_query(ids, OUTPUT, times)
        cold = (await first.wait(timeout=60, show_progress=False)).summary
        second = await client.offline_query(ids, OUTPUT, times)
        warm = (await second.wait(timeout=60, show_progress=False)).summary
        assert_same(await second.to_pandas(), reference(store, ids["user.id"], times, OUTPUT))
        counters = {k.decode(): int(float(v)) for k, v in (await client.redis.hgetall(client.keys.counters)).items()}
    assert counters["scan_cache_bytes_remote:default"] == cold.bytes_from_remote  # for jobqueue_scan_cache_*
    assert counters["scan_cache_bytes_cache:default"] == cold.bytes_from_cache + warm.bytes_from_cache
    assert counters["scan_cache_hits:default"] == cold.scan_cache_hits + warm.scan_cache_hits
    assert cold.scan_cache_enabled and cold.scan_cache_misses > 0 and cold.bytes_from_remote > 0
    assert warm.scan_cache_misses == 0 and warm.bytes_from_remote == 0, warm
    assert warm.scan_cache_hits > 0 and warm.bytes_from_cache > 0
    cache_dir = settings.spill_root / "table_scan_cache"
    assert sum(p.stat().st_size for p in cache_dir.glob("*/*.blk")) <= 64 << 20


async def test_iceberg_data_files_on_s3_are_read_through_the_scan_cache(s3_settings, store, s3_bucket, tmp_path):
    from pyiceberg.catalog.sql import SqlCatalog

    s3 = {"s3.endpoint": s3_settings.s3_endpoint_url, "s3.access-key-id": "test", "s3.secret-access-key": "test",
          "s3.region": "us-east-1"}
    props = {"uri": f"sqlite:///{tmp_path}/catalog.db", "warehouse": f"s3://{s3_bucket}/wh"}
    catalog = SqlCatalog("jobqueue", **props, **s3)
    catalog.create_namespace("db")
    data = pq.read_table(store.root / "user_profile").select(["user_id", "ts", "f0", "f1"])
    catalog.create_table("db.user_profile", schema=data.schema).append(data)
    source = {"name": "user_profile", "kind": "iceberg", "table": "db.user_profile",
              "catalog": {"type": "sql", **props}, "key": "user_id", "timestamp": "ts", "features": ["f0", "f1"]}
    path = tmp_path / "registry-iceberg.yaml"
    path.write_text(yaml.safe_dump({"namespaces": {"user": {"primary_key": "id", "sources": [source]}}}))
    settings = with_groups(s3_settings, tmp_path, {"default": {"max_instances": 1}}, registry_path=path,
                           table_scan_cache_bytes=64 << 20)
    ids, times = sample_input(store.users, 1_000, seed=4)
    async with running_manager(settings), AsyncJobQueueClient(settings) as client:
        summaries = []
        for _ in range(2):
            job = await client.offline_query(ids, ["user.f0", "user.f1"], times)
            summaries.append((await job.wait(timeout=60, show_progress=False)).summary)
        assert_same(await job.to_pandas(), reference(store, ids["user.id"], times, ["user.f0", "user.f1"]))
    cold, warm = summaries
    assert cold.sources["user_profile"]["kind"] == "iceberg" and cold.bytes_from_remote > 0
    data_files = _object_bytes(s3_settings, s3_bucket, "wh/")  # the table's Parquet data files
    assert data_files // 2 < cold.bytes_read <= 2 * data_files, (cold.bytes_read, data_files)
    assert warm.bytes_read == cold.bytes_read  # from the cache this time, the same bytes
    assert warm.scan_cache_hits > 0 and warm.bytes_from_remote == 0 and warm.scan_cache_misses == 0


def _object_bytes(settings, bucket: str, prefix: str) -> int:
    listing = s3_client(settings).list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sum(o["Size"] for o in listing.get("Contents", []) if o["Key"].endswith(".parquet"))


async def test_bytes_read_counts_the_s3_source_bytes_with_and_without_the_scan_cache(
        s3_settings, store, s3_bucket, tmp_path):
    registry = upload_store(s3_settings, store, s3_bucket, tmp_path)
    sources = _object_bytes(s3_settings, s3_bucket, "store/")
    ids, times = sample_input(store.users, 2_000, seed=11)
    uncached = s3_settings.model_copy(update={"registry_path": registry})
    async with AsyncJobQueueClient(uncached) as client:  # in-process: no scan cache
        direct = (await client.offline_query(ids, OUTPUT, times, run_asynchronously=False)).performance_summary
    settings = with_groups(s3_settings, tmp_path, {"default": {"max_instances": 1}}, registry_path=registry,
                           table_scan_cache_bytes=64 << 20)
    async with running_manager(settings), AsyncJobQueueClient(settings) as client:
        job = await client.offline_query(ids, OUTPUT, times)
        cold = (await job.wait(timeout=60, show_progress=False)).summary
    assert not direct.scan_cache_enabled and cold.scan_cache_enabled
    for summary in (direct, cold):  # about the sources' Parquet (a footer is read at planning and again at scan)
        assert sources // 2 < summary.bytes_read <= 2 * sources, (summary.bytes_read, sources)
    # the query read the same bytes with or without the cache; the cold cache fetched each (small) object once
    assert cold.bytes_read == direct.bytes_read, (cold.bytes_read, direct.bytes_read)
    assert cold.bytes_from_remote == sources
    assert cold.bytes_from_cache > 0  # a cold cache already serves the re-reads within one query
