"""Sources laid out in key buckets (`jobqueue.engine.buckets`, `jobqueue sources bucket`): the copy holds every row
once, in its key's bucket; a shard of a sharded query reads only the buckets of its keys and answers what the
unsharded query does; whatever does not line up reads every bucket."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from jobqueue import AsyncJobQueueClient, JobStatus
from jobqueue.cli.main import app
from jobqueue.engine.buckets import MANIFEST, BucketingError, BucketLayout, read_layout, write_bucketed
from jobqueue.models import ShardOf
from jobqueue.sample import SampleStore, sample_input
from jobqueue.settings import Settings
from jobqueue.sharding import shard_numbers
from jobqueue.storage import Storage
from tests.helpers import worker_running
from tests.reference import assert_same, reference

# user_profile and transactions (windowed aggregations) bucketed below, user_activity as generated
OUTPUT = ["user.f0", "user.f2", "user.logins", "user.txn_sum_30d", "user.txn_count_7d"]
BUCKETED = ("user_profile", "transactions")


def _bucketed_registry(store: SampleStore, tmp_path: Path, buckets: int) -> tuple[Path, BucketLayout]:
    """The store's registry with BUCKETED read from copies in `buckets` key buckets; `user_profile`'s layout."""
    layouts = {name: write_bucketed(Storage(Settings()), str(store.root / name),
                                    str(tmp_path / f"{name}-b{buckets}"), "user_id", buckets) for name in BUCKETED}
    registry = store.read_registry()
    for source in registry["namespaces"]["user"]["sources"]:
        bucketed = source["name"] in BUCKETED
        source["path"] = str(tmp_path / f"{source['name']}-b{buckets}" if bucketed else store.root / source["path"])
    path = tmp_path / f"registry-b{buckets}.yaml"
    path.write_text(yaml.safe_dump(registry))
    return path, layouts["user_profile"]


def test_a_bucketed_copy_holds_every_row_once_in_the_bucket_of_its_key(store, tmp_path):
    _, layout = _bucketed_registry(store, tmp_path, 8)
    dest = tmp_path / "user_profile-b8"
    source = pads.dataset(store.root / "user_profile").to_table()
    assert layout.rows == source.num_rows and layout.buckets == 8 and layout.key_kind == "integer"
    assert json.loads((dest / MANIFEST).read_text()) == json.loads(layout.model_dump_json())
    parts = []
    for b, names in enumerate(layout.files):
        for name in names:
            part = pq.read_table(dest / name)
            assert set(shard_numbers(part, "user_id", 8).to_pylist()) <= {b}, f"bucket {b} holds another's key"
            parts.append(part)
            codec = pq.ParquetFile(dest / name).metadata.row_group(0).column(2).compression
            assert codec == "SNAPPY"  # as the source's: a copy decodes as fast as what it copies
    copied = pa.concat_tables(parts)
    assert copied.schema == source.schema
    by = [("user_id", "ascending"), ("ts", "ascending")]
    assert copied.sort_by(by).equals(source.sort_by(by))
    assert read_layout(Storage(Settings()), str(dest)) == layout
    manifest = (dest / MANIFEST).read_text()
    for broken in ("{", manifest.replace("bucket=3/part-0.parquet", "../user_profile/part-0.parquet")):
        (dest / MANIFEST).write_text(broken)
        assert read_layout(Storage(Settings()), str(dest)) is None  # read whole: slower, never different
    assert read_layout(Storage(Settings()), str(store.root / "user_profile")) is None  # no manifest: a plain source


def test_bucketing_refuses_what_it_cannot_do_naming_the_fix(store, tmp_path):
    storage, src = Storage(Settings()), str(store.root / "user_profile")
    with pytest.raises(BucketingError, match="'uid' is not a column .*user_id"):
        write_bucketed(storage, src, str(tmp_path / "a"), "uid", 8)
    with pytest.raises(BucketingError, match="from 2 to 256"):
        write_bucketed(storage, src, str(tmp_path / "a"), "user_id", 1)
    with pytest.raises(BucketingError, match=r"is inside .*\(each row twice\).*user_profile-b8"):
        write_bucketed(storage, src, f"{src}/b8", "user_id", 8)  # unsharded queries would read it twice
    assert not (store.root / "user_profile" / "b8").exists()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.parquet").write_bytes(b"")
    with pytest.raises(BucketingError, match="already holds files"):
        write_bucketed(storage, src, str(tmp_path / "full"), "user_id", 8)
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["x.parquet"]  # nothing of its own is touched
    result = CliRunner().invoke(app, ["sources", "bucket", src, str(tmp_path / "full"), "--key", "user_id"])
    assert result.exit_code == 2 and "already holds files" in result.output
    told: list[tuple[int, int]] = []
    write_bucketed(storage, src, str(tmp_path / "told"), "user_id", 2, lambda done, total: told.append((done, total)))
    assert told and told[-1] == (store.feature_rows, store.feature_rows) and told == sorted(told)
    result = CliRunner().invoke(app, ["sources", "bucket", src, str(tmp_path / "cli"), "--key", "user_id",
                                      "--buckets", "4"])
    assert result.exit_code == 0, result.output
    assert f"{store.feature_rows:,} rows in 4 buckets" in result.output
    assert read_layout(storage, str(tmp_path / "cli")) is not None


def test_a_layout_that_does_not_line_up_with_the_shards_is_not_used():
    layout = BucketLayout(key="user_id", key_kind="integer", buckets=16, rows=1,
                          files=[[f"bucket={b}/part-0.parquet"] for b in range(16)])
    shard = ShardOf(index=1, count=4, namespace="user", key_kind="integer")
    assert layout.shard_files("user_id", shard) == ([1, 5, 9, 13], [f"bucket={b}/part-0.parquet"
                                                                   for b in (1, 5, 9, 13)])
    assert layout.shard_files("uid", shard) is None  # another key column
    assert layout.shard_files("user_id", shard.model_copy(update={"key_kind": "text"})) is None
    assert layout.shard_files("user_id", ShardOf(index=1, count=3, namespace="user", key_kind="integer")) is None
    for outside in ("../features/part-0.parquet", "/etc/part.parquet", "bucket=1/../../x.parquet"):
        with pytest.raises(ValueError, match="not a relative path inside the layout"):
            BucketLayout(key="user_id", key_kind="integer", buckets=2, rows=1, files=[[outside], []])
    with pytest.raises(ValueError, match="lists files of 3 buckets, not of its 16"):
        BucketLayout(key="user_id", key_kind="integer", buckets=16, rows=1, files=[["bucket=0/part-0.parquet"]] * 3)
    with pytest.raises(ValueError, match="not below the shard count"):
        ShardOf(index=4, count=4, namespace="user", key_kind="integer")


@pytest.mark.parametrize("n", [4, 3])
async def test_each_shard_reads_only_its_buckets_and_the_query_answers_as_unsharded(settings, store, tmp_path, n):
    registry, layout = _bucketed_registry(store, tmp_path, 16)
    settings = settings.model_copy(update={"registry_path": registry})
    ids, times = sample_input(store.users, 500, seed=n)
    keys = pa.array([None if i % 23 == 4 else v for i, v in enumerate(ids["user.id"].to_pylist())], pa.int64())
    async with AsyncJobQueueClient(settings) as client, worker_running(settings, max_jobs=4):
        whole = await client.offline_query({"user.id": keys}, OUTPUT, times)
        sharded = await client.offline_query({"user.id": keys}, OUTPUT, times, num_shards=n)
        for job in (whole, sharded):
            assert (await job.wait(timeout=120, show_progress=False)).status is JobStatus.SUCCEEDED
        got, expected = await sharded.to_pandas(), await whole.to_pandas()
        pd.testing.assert_frame_equal(got, expected)
        known = [k is not None for k in keys.to_pylist()]
        assert_same(got[known].reset_index(drop=True), reference(
            store, keys.filter(pa.array(known)), times.filter(pa.array(known)), OUTPUT))
        whole_facts = (await whole.record()).summary.sources  # type: ignore[union-attr]
        assert "buckets_read" not in whole_facts["user_profile"]  # unsharded: every bucket, as a directory
        parent = await sharded.record()
        for shard_id in parent.shard_ids:
            facts = (await client.get_job(shard_id)).summary.sources  # type: ignore[union-attr]
            assert "buckets_read" not in facts["user_activity"]  # not bucketed: read whole
            for name in BUCKETED:
                if n == 4:  # 4 divides 16: a shard reads its 4 buckets, a quarter of the rows
                    assert facts[name]["buckets"] == 16 and facts[name]["buckets_read"] == 4
                else:  # 3 does not: every bucket
                    assert "buckets_read" not in facts[name]
    assert layout.buckets == 16


async def test_a_shard_reads_its_buckets_from_an_object_store(s3_settings, store, tmp_path):
    storage = Storage(s3_settings)
    dest = s3_settings.staging_uri.replace("/staging", "/sources/user_profile-b8")
    layout = write_bucketed(storage, str(store.root / "user_profile"), dest, "user_id", 8)
    assert read_layout(storage, dest) == layout
    with pytest.raises(BucketingError, match="already holds files"):
        write_bucketed(storage, str(store.root / "user_profile"), dest, "user_id", 8)
    registry = store.read_registry()
    for source in registry["namespaces"]["user"]["sources"]:
        source["path"] = dest if source["name"] == "user_profile" else str(store.root / source["path"])
    path = tmp_path / "registry-s3.yaml"
    path.write_text(yaml.safe_dump(registry))
    settings = s3_settings.model_copy(update={"registry_path": path})
    ids, times = sample_input(store.users, 200, seed=5)
    async with AsyncJobQueueClient(settings) as client, worker_running(settings, max_jobs=2):
        whole = await client.offline_query(ids, OUTPUT, times)
        sharded = await client.offline_query(ids, OUTPUT, times, num_shards=2)
        for job in (whole, sharded):
            assert (await job.wait(timeout=120, show_progress=False)).status is JobStatus.SUCCEEDED
        pd.testing.assert_frame_equal(await sharded.to_pandas(), await whole.to_pandas())
        for shard_id in (await sharded.record()).shard_ids:
            facts = (await client.get_job(shard_id)).summary.sources  # type: ignore[union-attr]
            assert facts["user_profile"]["buckets_read"] == 4
