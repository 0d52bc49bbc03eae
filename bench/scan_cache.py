"""Table-scan SSD cache: cold vs warm scans of Parquet on an object store, and hit ratios over capacity.

    python bench/scan_cache.py [--mb 512] [--latency-ms 20] [--bandwidth-mbps 100]

The object store is bench/s3_range_server.py (real ranged reads from files, a first-byte latency
and a per-connection bandwidth like S3 seen from a VM), read through pyarrow's S3FileSystem, the
production path. DuckDB sums every column of the dataset, so every byte is read. Side by side in
one run:
- direct: no cache; cold: through an empty cache; warm: the same scan again.
- over capacity: a cache of half the data, scanned three times; the third scan's hit ratio, ours
  (frequency-based admission) and plain LRU.
The last line is JSON with `warm_over_cold`, `warm_hit_ratio` and `over_capacity_hit_ratio`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import duckdb  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.dataset as pads  # noqa: E402
import pyarrow.fs as pafs  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from bench.s3_range_server import RangeServer  # noqa: E402
from jobqueue.engine.cached_fs import cached_filesystem  # noqa: E402
from jobqueue.engine.scan_cache import BlockCache, ScanStats  # noqa: E402

COLUMNS = 8
FILES = 8


def write_data(root: Path, total_mb: int) -> list[str]:
    rows = total_mb * (1 << 20) // (8 * COLUMNS * FILES)
    rng = np.random.default_rng(7)
    paths = []
    for i in range(FILES):
        table = pa.table({f"c{c}": rng.random(rows) for c in range(COLUMNS)})
        path = root / "bench" / "data" / f"part-{i}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path, compression="none", row_group_size=256 * 1024)
        paths.append(f"bench/data/part-{i}.parquet")
    return paths


def scan(fs: pafs.FileSystem, paths: list[str]) -> float:
    con = duckdb.connect()
    con.execute("SET threads = 2")
    con.register("t", pads.dataset(paths, filesystem=fs, format="parquet"))
    started = time.perf_counter()
    con.execute("SELECT " + ", ".join(f"sum(c{c})" for c in range(COLUMNS)) + " FROM t").fetchall()
    seconds = time.perf_counter() - started
    con.close()
    return seconds


def hit_ratio(stats: ScanStats) -> float:
    return stats.hits / max(1, stats.hits + stats.misses)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=512)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--bandwidth-mbps", type=float, default=100.0, help="MB/s per connection")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=Path.home() / ".cache" if (Path.home() / ".cache").is_dir() else None) as t:
        tmp = Path(t)
        paths = write_data(tmp / "store", args.mb)
        data_bytes = sum((tmp / "store" / p).stat().st_size for p in paths)
        server = RangeServer(tmp / "store", latency_s=args.latency_ms / 1000, bandwidth_bps=args.bandwidth_mbps * 1e6)
        server.start()
        base = pafs.S3FileSystem(endpoint_override=server.url, scheme="http", access_key="bench", secret_key="bench",
                                 region="us-east-1")
        mb = data_bytes / 1e6
        direct = scan(base, paths)

        cache = BlockCache(tmp / "cache", capacity_bytes=2 * data_bytes)
        cold_stats, warm_stats = ScanStats(), ScanStats()
        cold = scan(cached_filesystem(base, cache, cold_stats), paths)
        warm = scan(cached_filesystem(base, cache, warm_stats), paths)
        cache.close()

        over: dict[str, float] = {}
        for name, admission in (("ours", True), ("lru", False)):
            small = BlockCache(tmp / f"small-{name}", capacity_bytes=data_bytes // 2, admission=admission)
            for _ in range(2):
                scan(cached_filesystem(base, small, ScanStats()), paths)
            third = ScanStats()
            scan(cached_filesystem(base, small, third), paths)
            assert small.disk_bytes() <= small.capacity
            over[name] = hit_ratio(third)
            small.close()
            shutil.rmtree(tmp / f"small-{name}")
        server.stop()

    print(f"data: {FILES} Parquet files, {mb:.0f} MB; object store: {args.latency_ms:g} ms to first byte, "
          f"{args.bandwidth_mbps:g} MB/s per connection")
    print(f"direct (no cache): {direct:.2f} s, {mb / direct:.0f} MB/s")
    print(f"cold (empty cache): {cold:.2f} s, {mb / cold:.0f} MB/s, hit ratio {hit_ratio(cold_stats):.3f}")
    print(f"warm (second scan): {warm:.2f} s, {mb / warm:.0f} MB/s, hit ratio {hit_ratio(warm_stats):.3f} "
          f"-> warm/cold {cold / warm:.2f}x, warm/direct {direct / warm:.2f}x")
    print(f"working set 2x the cap, third scan hit ratio: ours {over['ours']:.3f}, plain LRU {over['lru']:.3f}")
    print(json.dumps({
        "warm_over_cold": round(cold / warm, 3), "warm_hit_ratio": round(hit_ratio(warm_stats), 4),
        "over_capacity_hit_ratio": round(over["ours"], 4), "lru_over_capacity_hit_ratio": round(over["lru"], 4),
        "warm_over_direct": round(direct / warm, 3), "direct_mb_per_s": round(mb / direct, 1),
        "cold_mb_per_s": round(mb / cold, 1), "warm_mb_per_s": round(mb / warm, 1), "data_mb": round(mb, 1),
        "latency_ms": args.latency_ms, "bandwidth_mb_per_s": args.bandwidth_mbps,
    }))


if __name__ == "__main__":
    main()
