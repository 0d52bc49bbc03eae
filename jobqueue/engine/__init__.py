"""The query engine: one planned query -> Parquet result + performance summary, on DuckDB.

Shared by the consumers (`consumer.job`) and the SDK's in-process mode (`run_asynchronously=False`),
so it lives here and not in `consumer/`.

    execute       payload -> staged input -> plan -> run -> result + summary (`PreparedQuery`)
    duckdb_run    one query on its own DuckDB connection, limits and spill directory (blocking)
    sources       registry source -> relation DuckDB scans (Parquet, Iceberg; local or object store)
    buckets       Parquet sources laid out in key buckets: a shard reads only its share (and their writer)
    schema_check  a source's real columns against the registry, before the query runs
    scan_cache    the table-scan SSD cache (object-store bytes in blocks on local disk)
    cached_fs     a read-only pyarrow filesystem reading through the scan cache
    resources     container memory and CPU limits from cgroups (pure parsing + one reader)
    disk_space    the spill volume's ledger: spill and scan-cache reservations

I/O rule: local disk (spill, scan cache, the ledger file, cgroup files) and the object store through
`jobqueue.storage` and pyarrow; never Redis. It imports only the contract in `jobqueue/`, never
`manager` or `consumer`.
"""
