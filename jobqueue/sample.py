"""A generated offline store for the demo, tests and benchmarks: Parquet sources plus a registry.

Namespace `user` (primary key `id`) with two sources:
- `user_profile`: `user_id`, `ts`, and float features `f0..f{n-1}` (n = `features`)
- `user_activity`: `user_id`, `ts`, `logins`, `segment`
- `transactions` (when `events_per_user` > 0): `user_id`, `ts`, `amount`, `merchant`, with the
  windowed aggregations `txn_sum_30d`, `txn_count_7d`, `txn_mean_30d`, `txn_min_30d`,
  `txn_max_30d` and `merchants_30d` (count distinct)
Each user has `snapshots` rows per source at distinct random times in 2024. Deterministic per seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

YEAR_START = datetime(2024, 1, 1, tzinfo=UTC)
YEAR_SECONDS = 366 * 24 * 3600


@dataclass(frozen=True)
class SampleStore:
    root: Path
    registry_path: Path
    users: int
    feature_rows: int

    def read_registry(self) -> dict[str, Any]:
        registry: dict[str, Any] = yaml.safe_load(self.registry_path.read_text())
        return registry


def _timestamps(rng: np.random.Generator, users: int, snapshots: int) -> np.ndarray:
    """`snapshots` distinct times per user (sorted), as int64 microseconds since the epoch."""
    base = int(YEAR_START.timestamp())
    slot = YEAR_SECONDS // snapshots
    offsets = rng.integers(0, slot, size=(users, snapshots)) + np.arange(snapshots) * slot
    return ((base + offsets) * 1_000_000).reshape(-1)


def write_sample_store(
    root: Path,
    users: int = 100_000,
    snapshots: int = 10,
    features: int = 4,
    seed: int = 7,
    files: int = 4,
    events_per_user: int = 0,
) -> SampleStore:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    user_ids = np.repeat(np.arange(users, dtype=np.int64), snapshots)
    ts = pa.array(_timestamps(rng, users, snapshots), type=pa.timestamp("us"))
    profile = pa.table(
        {"user_id": user_ids, "ts": ts, **{f"f{i}": rng.random(users * snapshots) for i in range(features)}}
    )
    activity = pa.table({
        "user_id": user_ids,
        "ts": pa.array(_timestamps(rng, users, snapshots), type=pa.timestamp("us")),
        "logins": rng.integers(0, 50, users * snapshots),
        "segment": pa.array(np.array(["free", "pro", "team"])[rng.integers(0, 3, users * snapshots)]),
    })
    tables = [("user_profile", profile), ("user_activity", activity)]
    if events_per_user:
        n = users * events_per_user
        tables.append(("transactions", pa.table({
            "user_id": np.repeat(np.arange(users, dtype=np.int64), events_per_user),
            "ts": pa.array(_timestamps(rng, users, events_per_user), type=pa.timestamp("us")),
            "amount": np.round(rng.exponential(40.0, n), 2),
            "merchant": rng.integers(0, 25, n),
        })))
    for name, table in tables:
        d = root / name
        d.mkdir(exist_ok=True)
        for f in d.glob("*.parquet"):
            f.unlink()
        # shuffle rows across files so no source is pre-sorted for the join
        order = rng.permutation(table.num_rows)
        for i, chunk in enumerate(np.array_split(order, files)):
            pq.write_table(table.take(pa.array(chunk)), d / f"part-{i}.parquet", row_group_size=256_000)
    registry = {
        "namespaces": {
            "user": {
                "primary_key": "id",
                "sources": [
                    {"name": "user_profile", "kind": "parquet", "path": "user_profile", "key": "user_id",
                     "timestamp": "ts", "features": [f"f{i}" for i in range(features)]},
                    {"name": "user_activity", "kind": "parquet", "path": "user_activity", "key": "user_id",
                     "timestamp": "ts", "features": ["logins", "segment"]},
                ] + ([{
                    "name": "transactions", "kind": "parquet", "path": "transactions", "key": "user_id",
                    "timestamp": "ts", "aggregations": {
                        "txn_sum_30d": {"function": "sum", "column": "amount", "window": "30d"},
                        "txn_count_7d": {"function": "count", "window": "7d"},
                        "txn_mean_30d": {"function": "mean", "column": "amount", "window": "30d"},
                        "txn_min_30d": {"function": "min", "column": "amount", "window": "30d"},
                        "txn_max_30d": {"function": "max", "column": "amount", "window": "30d"},
                        "merchants_30d": {"function": "count_distinct", "column": "merchant", "window": "30d"},
                    },
                }] if events_per_user else []),
            }
        }
    }
    registry_path = root / "registry.yaml"
    registry_path.write_text(yaml.safe_dump(registry, sort_keys=False))
    return SampleStore(root, registry_path, users, users * snapshots)


def sample_input(users: int, rows: int, seed: int = 11, unknown_fraction: float = 0.02
                 ) -> tuple[dict[str, pa.Array], pa.Array]:
    """Random lookups: user ids (a few unknown) with as-of times spread over 2024 (some before any data)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, int(users * (1 + unknown_fraction)) + 1, rows)
    base = int(YEAR_START.timestamp()) - 7 * 24 * 3600
    seconds = base + rng.integers(0, YEAR_SECONDS + 7 * 24 * 3600, rows)
    times = pa.array(seconds * 1_000_000, type=pa.timestamp("us", tz="UTC"))
    return {"user.id": pa.array(ids, type=pa.int64())}, times
