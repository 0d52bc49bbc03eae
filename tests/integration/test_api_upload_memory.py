"""A staged upload (`POST /v1/uploads`, then `POST /v1/jobs?upload=<ref>`) is checked and staged for its job batch by
batch (`jobqueue.staged_input`), against a real S3 HTTP API (moto's server) and a real uvicorn: the API's Arrow
memory stays far below the decoded input, and its refusals are the texts a body gets, naming the field."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import httpx
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest

from jobqueue.api.server import api_in_thread
from jobqueue.auth.identity import Role
from jobqueue.plan import ROW_COLUMN, TS_COLUMN
from jobqueue.sharding import split
from jobqueue.storage import Storage, job_uri
from tests.api_support import ARROW, PARQUET, bearer, make_token

PARQUET_TYPE = PARQUET["content-type"]
ARROW_TYPE = ARROW["content-type"]
ROWS = 6_000_000  # 48 MB of keys decoded; with `__ts__` and `__row__`, 144 MB as a table


def _parquet(table: pa.Table) -> bytes:
    out = io.BytesIO()
    pq.write_table(table, out, row_group_size=256 * 1024, compression="zstd")
    return out.getvalue()


async def _upload(http: httpx.AsyncClient, body: bytes, content_type: str = PARQUET_TYPE) -> str:
    r = await http.post("/v1/uploads", json={"size": len(body), "content_type": content_type})
    assert r.status_code == 201, r.text
    ticket = r.json()
    async with httpx.AsyncClient(timeout=60) as raw:
        put = await raw.put(ticket["url"], content=body, headers=ticket["headers"])
    assert put.status_code == 200, put.text
    return str(ticket["upload"])


@pytest.mark.parametrize("num_shards", [None, 4])
async def test_a_large_staged_upload_is_checked_and_staged_without_decoding_it_whole(s3_settings, num_shards):
    settings = s3_settings.model_copy(update={"api_presign_seconds": 120})
    alice = await make_token(settings, "alice", Role.USER, "risk")
    # keys repeat (a small dictionary-encoded file: a few MB to PUT), while the table they decode to is large
    keys = pc.add(pc.bit_wise_and(pa.array(range(ROWS), pa.int64()), 1023), 1)
    body = _parquet(pa.table({"user.id": keys}))
    shards = {"num_shards": num_shards} if num_shards else {}
    with api_in_thread(settings, port=0) as url:
        async with httpx.AsyncClient(base_url=url, headers=bearer(alice), timeout=120) as http:
            ref = await _upload(http, body)
            pool = pa.proxy_memory_pool(pa.default_memory_pool())  # counts what the API allocates from now on
            default = pa.default_memory_pool()
            pa.set_memory_pool(pool)
            try:
                r = await http.post("/v1/jobs", params={"output": ["user.f0"], "upload": ref, **shards})
            finally:
                pa.set_memory_pool(default)
            assert r.status_code == 201, r.text
            record = r.json()
    peak = pool.max_memory()
    print(f"API Arrow peak ({num_shards or 1} shard(s)): {peak / 2**20:.1f} MiB")
    assert record["input_rows"] == ROWS
    # decoding it whole held the keys, then `__ts__` and `__row__` (144 MB); batch by batch holds a few batches
    assert peak < 40 << 20, f"the API's Arrow memory peaked at {peak / 2**20:.0f} MiB"
    storage = Storage(settings)
    ids = record["shard_ids"] or [record["job_id"]]
    staged = [storage.read_table(job_uri(settings.staging, settings.environment, i, "input.parquet")) for i in ids]
    assert all(t.column_names == ["user.id", TS_COLUMN, ROW_COLUMN] for t in staged)
    assert sum(t.num_rows for t in staged) == ROWS
    assert pc.count_distinct(pa.chunked_array([t.column(TS_COLUMN) for t in staged])).as_py() == 1
    # the same rows in the same shards, in input order, as splitting the whole table in memory
    whole = pa.table({"user.id": keys, ROW_COLUMN: pa.array(range(ROWS), pa.int64())})
    expected = split(whole, "user.id", num_shards) if num_shards else [whole]
    assert len(staged) == len([e for e in expected if e.num_rows])
    for got, want in zip(staged, [e for e in expected if e.num_rows], strict=True):
        assert got.select(["user.id", ROW_COLUMN]).equals(want), "a shard's rows differ from the in-memory split"


async def test_a_staged_uploads_times_column_is_checked_over_every_batch_with_the_texts_of_a_body(s3_settings):
    settings = s3_settings.model_copy(update={"api_presign_seconds": 120})
    alice = await make_token(settings, "alice", Role.USER, "risk")
    n = 600_000  # past the first batches read (256 Ki rows each)
    base = datetime(2026, 1, 5, tzinfo=UTC)
    times = pa.array([base + timedelta(seconds=i) for i in range(n)], pa.timestamp("us", tz="UTC"))
    ids = pa.array(range(1, n + 1), pa.int64())
    fine = pq.read_table(io.BytesIO(_parquet(pa.table({"user.id": ids, "t": times}))))
    nanos = times.cast(pa.timestamp("ns", tz="UTC")).to_pylist()
    finer = pa.array([*range(n)], pa.int64())  # one time 1 ns past a microsecond, at row 550,001
    finer = pc.add(pc.multiply(finer, 1_000_000_000), pc.if_else(pc.equal(finer, 550_001), 1, 0))
    finer = pc.add(finer, int(base.timestamp() * 1e9)).cast(pa.timestamp("ns", tz="UTC"))
    with_null = pa.array([*nanos[:300_000], None, *nanos[300_001:]], pa.timestamp("ns", tz="UTC"))
    with api_in_thread(settings, port=0) as url:
        async with httpx.AsyncClient(base_url=url, headers=bearer(alice), timeout=120) as http:
            async def submit(table: pa.Table, column: str | None = "t") -> httpx.Response:
                ref = await _upload(http, _parquet(table))
                times = {"input_times_column": column} if column is not None else {}
                return await http.post("/v1/jobs", params={"output": ["user.f0"], "upload": ref, **times})

            r = await submit(pa.table({"user.id": ids, "t": finer}))
            assert r.status_code == 422 and r.json()["field"] == "input_times[550001]", r.text
            assert "is finer than a microsecond" in r.json()["detail"]
            r = await submit(pa.table({"user.id": ids, "t": with_null}))
            assert (r.status_code, r.json()["field"]) == (422, "input_times"), r.text
            assert "contains nulls; give every row a time" in r.json()["detail"]
            r = await submit(fine, column="when")
            assert (r.status_code, r.json()["field"]) == (422, "input_times_column"), r.text
            assert "'when' is not a column of the input; its columns: user.id, t" in r.json()["detail"]
            r = await submit(pa.table({"user.id": pa.array([], pa.int64())}), column=None)
            assert (r.status_code, r.json()["field"]) == (422, "input"), r.text
            assert "is empty; pass at least one row with the primary key column" in r.json()["detail"], r.text
            r = await submit(fine)
            assert r.status_code == 201, r.text
            record = r.json()
    staged = Storage(settings).read_table(job_uri(settings.staging, settings.environment, record["job_id"],
                                                  "input.parquet"))
    assert staged.column_names == ["user.id", TS_COLUMN, ROW_COLUMN]
    assert staged.column(TS_COLUMN).equals(fine.column("t").cast(pa.timestamp("us", tz="UTC")))
    assert record["input_rows"] == n


async def test_a_staged_arrow_stream_is_read_batch_by_batch_and_a_broken_one_named(s3_settings):
    settings = s3_settings.model_copy(update={"api_presign_seconds": 120})
    alice = await make_token(settings, "alice", Role.USER, "risk")
    table = pa.table({"user.id": pa.array(range(1, 150_001), pa.int64())})
    out = io.BytesIO()
    with ipc.new_stream(out, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=10_000):  # 15 batches
            writer.write_batch(batch)
    body = out.getvalue()
    with api_in_thread(settings, port=0) as url:
        async with httpx.AsyncClient(base_url=url, headers=bearer(alice), timeout=120) as http:
            ref = await _upload(http, body[: len(body) // 2], ARROW_TYPE)  # cut off in the middle of a batch
            r = await http.post("/v1/jobs", params={"output": ["user.f0"], "upload": ref})
            assert (r.status_code, r.json()["field"]) == (422, "input"), r.text
            assert r.json()["detail"].startswith("input: the body is not an Arrow IPC stream: "), r.text
            ref = await _upload(http, body, ARROW_TYPE)
            r = await http.post("/v1/jobs", params={"output": ["user.f0"], "upload": ref})
            assert r.status_code == 201, r.text
            record = r.json()
    assert record["input_rows"] == 150_000
    staged = Storage(settings).read_table(job_uri(settings.staging, settings.environment, record["job_id"],
                                                  "input.parquet"))
    assert staged.column("user.id").equals(table.column("user.id"))
    assert staged.column(ROW_COLUMN).to_pylist() == list(range(150_000))
