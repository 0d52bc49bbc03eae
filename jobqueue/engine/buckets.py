"""Parquet sources laid out in key buckets: each shard of a sharded query reads only the buckets holding its keys.

A shard of `num_shards=N` holds the input rows whose key hashes to its index mod N (`jobqueue.sharding`). Scanning a
source costs what decoding all of it costs, whatever share of its keys a shard asks for (Parquet pages hold every
key), so N shards of a query scan its sources N times. Laid out in B buckets by the same hash, with N dividing B, a
source gives each shard the B/N buckets that hold all of its keys, and the N shards scan it once between them.

    jobqueue sources bucket s3://lake/features/user s3://lake/features/user-b64 --key user_id --buckets 64

Layout, written by `write_bucketed` (the command above):

    <dest>/bucket=<b>/part-0.parquet    the rows whose key hashes to b mod B, in the source's order (compressed
                                        as the source's first file is)
    <dest>/_jobqueue_buckets.json       the manifest, written last: the key column, which hash its type takes,
                                        B, the rows, and every bucket's files

Point the registry's source `path` at `<dest>`. Unsharded queries read it as any Parquet directory (every bucket);
a shard reads `buckets_of_shard`'s buckets when the manifest's key is the source's `key`, the key kinds agree
(integer or text) and N divides B. Anything else, a missing or unreadable manifest included, reads every bucket:
slower, never different. Keys are hashed as the shards' are, so a null key lands in bucket 0 and matches nothing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from jobqueue.logs import get_logger
from jobqueue.models import ShardOf
from jobqueue.sharding import buckets_of_shard, key_kind, shard_numbers
from jobqueue.storage import Storage, is_local, local_path

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.dataset as pads
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

log = get_logger("jobqueue.engine.buckets")
MANIFEST = "_jobqueue_buckets.json"
_FILE_NAME = re.compile(r"[A-Za-z0-9_=.-]+(/[A-Za-z0-9_=.-]+)*\.parquet")
MAX_BUCKETS = 256  # one open file per bucket while writing
FLUSH_ROWS = 128 * 1024  # rows of a bucket gathered before they are written as a row group
FLUSH_BYTES = 256 << 20  # every bucket is written out once this much is gathered across them


class BucketLayout(BaseModel):
    """The manifest of a bucketed source."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal[1] = 1
    key: str
    key_kind: Literal["integer", "text"]
    buckets: int = Field(ge=2, le=MAX_BUCKETS)
    rows: int = Field(ge=0)
    files: list[list[str]]  # per bucket, its files relative to the layout's directory

    @field_validator("files")
    @classmethod
    def _inside_the_layout(cls, files: list[list[str]]) -> list[list[str]]:
        """Every file is a plain relative path below the layout's directory: a manifest never points elsewhere."""
        for name in (name for names in files for name in names):
            if not _FILE_NAME.fullmatch(name) or ".." in name.split("/"):
                raise ValueError(f"bucket file {name!r} is not a relative path inside the layout")
        return files

    @model_validator(mode="after")
    def _a_file_list_per_bucket(self) -> BucketLayout:
        if len(self.files) != self.buckets:
            raise ValueError(f"the manifest lists files of {len(self.files)} buckets, not of its {self.buckets}")
        return self

    def shard_files(self, source_key: str, shard: ShardOf) -> tuple[list[int], list[str]] | None:
        """The buckets holding every row of `shard` and their files (relative), or None when this layout does not
        line up with the shard (another key column or kind, or N does not divide B)."""
        if self.key != source_key or self.key_kind != shard.key_kind:
            return None
        buckets = buckets_of_shard(self.buckets, shard.index, shard.count)
        if buckets is None:
            return None
        return buckets, [name for b in buckets for name in self.files[b]]


def read_layout(storage: Storage, uri: str) -> BucketLayout | None:
    """The manifest of the directory `uri`, or None when it has none (a plain source), or it cannot be read (an
    object store may answer 403 for a missing key to a reader without list rights) or does not read as one (both
    logged): the source is then read whole, which is slower but the same rows."""
    try:
        if is_local(uri):  # not through pyarrow's filesystem: its thread pools cost a consumer ~40 MB of RSS
            raw = (local_path(uri) / MANIFEST).read_bytes()
        else:
            fs, path = storage.resolve(uri)
            with fs.open_input_stream(f"{path.rstrip('/')}/{MANIFEST}") as f:
                raw = f.read()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    except OSError as e:  # an object store says "not found" in its own words, or 403 without s3:ListBucket
        text = str(e).lower()
        if "not found" not in text and "does not exist" not in text:
            log.warning("bucket manifest not read: the source is read whole", uri=uri, error=str(e)[:300])
        return None
    try:
        return BucketLayout.model_validate(json.loads(raw))
    except (ValueError, ValidationError) as e:
        log.warning("bucket manifest unreadable: the source is read whole", uri=uri, error=str(e)[:300])
        return None


class BucketingError(ValueError):
    """The source or destination cannot be bucketed as asked; the message names what and the fix."""


@dataclass
class _Bucket:
    """One bucket while it is written: the rows gathered for it, and its file once opened."""

    name: str
    pending: list[pa.RecordBatch] = field(default_factory=list)
    rows: int = 0
    out: pa.NativeFile | None = None
    writer: pq.ParquetWriter | None = None


class _BucketWriter:
    """Rows in, each to its bucket's file under `root`; what is gathered is written once a bucket has FLUSH_ROWS,
    or all of it once FLUSH_BYTES of batches are held (the buckets' slices keep their whole batch alive)."""

    def __init__(self, fs: pafs.FileSystem, root: str, schema: pa.Schema, key: str, buckets: int,
                 compression: str) -> None:
        self.fs, self.root, self.schema, self.key, self.compression = fs, root, schema, key, compression
        self.buckets = [_Bucket(f"bucket={b}/part-0.parquet") for b in range(buckets)]
        self.rows = self.held = 0

    def add(self, batch: pa.RecordBatch) -> None:
        import numpy as np
        import pyarrow as pa

        self.rows += batch.num_rows
        self.held += batch.nbytes
        numbers = np.asarray(shard_numbers(pa.Table.from_batches([batch]), self.key, len(self.buckets)).to_numpy())
        ordered = batch.take(pa.array(np.argsort(numbers, kind="stable")))  # by bucket, each in the source's order
        start = 0
        for bucket, count in zip(self.buckets, np.bincount(numbers, minlength=len(self.buckets)).tolist(),
                                 strict=True):
            if count:
                bucket.pending.append(ordered.slice(start, count))
                bucket.rows, start = bucket.rows + count, start + count
                if bucket.rows >= FLUSH_ROWS:
                    self._flush(bucket)
        if self.held > FLUSH_BYTES:
            for bucket in self.buckets:
                self._flush(bucket)
            self.held = 0

    def _open(self, bucket: _Bucket) -> pq.ParquetWriter:
        import pyarrow.parquet as pq

        if bucket.writer is None:
            self.fs.create_dir(f"{self.root}/{bucket.name.rpartition('/')[0]}", recursive=True)
            bucket.out = self.fs.open_output_stream(f"{self.root}/{bucket.name}")
            bucket.writer = pq.ParquetWriter(bucket.out, self.schema, compression=self.compression)
        return bucket.writer

    def _flush(self, bucket: _Bucket) -> None:
        import pyarrow as pa

        if bucket.pending:
            self._open(bucket).write_table(pa.Table.from_batches(bucket.pending, self.schema))
            bucket.pending, bucket.rows = [], 0

    def finish(self) -> list[str]:
        """Write what is left and close every file (a bucket without rows gets an empty one, so that every shard
        reads a schema); the files' names, by bucket."""
        for bucket in self.buckets:
            self._flush(bucket)
            writer = self._open(bucket)
            writer.close()
            assert bucket.out is not None
            bucket.out.close()  # an object store's upload completes here
        return [bucket.name for bucket in self.buckets]

    def abort(self) -> None:
        """Close what is open and delete what was written."""
        for bucket in self.buckets:
            if bucket.out is not None:
                bucket.out.close()
        self.fs.delete_dir_contents(self.root, missing_dir_ok=True)


def _compression_of(dataset: pads.Dataset) -> str:
    """The codec of the source's first column chunk, so that the copy costs what the source costs to decode (zstd
    decodes incompressible doubles at half snappy's speed); snappy, Parquet's usual, when there is none or this
    pyarrow cannot write it."""
    import pyarrow as pa

    for fragment in dataset.get_fragments():
        meta = fragment.metadata
        if meta.num_row_groups and meta.num_columns:
            codec = str(meta.row_group(0).column(0).compression).lower()
            codec = {"uncompressed": "none", "lz4_raw": "lz4"}.get(codec, codec)
            return codec if codec == "none" or pa.Codec.is_available(codec) else "snappy"
    return "snappy"


def write_bucketed(storage: Storage, source_uri: str, dest_uri: str, key: str, buckets: int,
                   progress: Callable[[int, int], None] | None = None) -> BucketLayout:
    """Write the Parquet source at `source_uri` (a file, directory or glob, on any store) as `buckets` key buckets
    under `dest_uri`, which must not hold anything yet. The manifest is written last, and a copy cut short by an
    error is deleted. One source batch, plus at most FLUSH_BYTES gathered for the buckets, is held at a time.
    `progress(rows done, rows in all)` is called after each source batch."""
    import pyarrow.fs as pafs

    if not 2 <= buckets <= MAX_BUCKETS:
        raise BucketingError(f"--buckets must be from 2 to {MAX_BUCKETS}, got {buckets}; pick a multiple of the "
                             "num_shards your queries use (a shard reads buckets / num_shards of them)")
    dataset = storage.parquet_dataset(source_uri)
    if key not in dataset.schema.names:
        raise BucketingError(f"--key {key!r} is not a column of {source_uri}; its columns: "
                             f"{', '.join(dataset.schema.names)}")
    fs, root = storage.resolve(dest_uri)
    root = root.rstrip("/")
    source_fs, source_root = storage.resolve(source_uri)
    source_root = source_root.split("*", 1)[0].rstrip("/")  # a glob's folder
    if source_fs.type_name == fs.type_name and f"{root}/".startswith(f"{source_root}/"):
        raise BucketingError(f"{dest_uri} is inside {source_uri}: every query of the source would read the copy "
                             "too (each row twice); write it beside the source, e.g. "
                             f"{source_uri.split('*', 1)[0].rstrip('/')}-b{buckets}")
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.File or (
            info.type == pafs.FileType.Directory and fs.get_file_info(pafs.FileSelector(root, recursive=False))):
        raise BucketingError(f"{dest_uri} already holds files: give a new or empty destination (a bucketed copy "
                             "is written whole, then its manifest)")
    writer = _BucketWriter(fs, root, dataset.schema, key, buckets, _compression_of(dataset))
    total = dataset.count_rows() if progress is not None else 0  # from the files' footers
    try:
        for batch in dataset.to_batches(batch_size=FLUSH_ROWS * 4):
            if batch.num_rows:
                writer.add(batch)
                if progress is not None:
                    progress(writer.rows, total)
        names = writer.finish()
    except BaseException:  # nothing half-written stays behind to be mistaken for the source
        writer.abort()
        raise
    layout = BucketLayout(key=key, key_kind=key_kind(dataset.schema.field(key).type), buckets=buckets,
                          rows=writer.rows, files=[[name] for name in names])
    with fs.open_output_stream(f"{root}/{MANIFEST}") as out:
        out.write(layout.model_dump_json(indent=1).encode())
    return layout
