"""The pandas `merge_asof` reference that results are checked against, row for row."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from jobqueue.sample import SampleStore


def reference(store: SampleStore, ids: pa.Array, times: pa.Array, output: list[str]) -> pd.DataFrame:
    registry = store.read_registry()["namespaces"]["user"]["sources"]
    left = pd.DataFrame({"user.id": ids.to_numpy(), "__ts__": times.to_pandas()})
    left["__row__"] = range(len(left))
    out = left[["user.id"]].copy()
    for src in registry:
        aggs = {f: a for f, a in src.get("aggregations", {}).items() if f"user.{f}" in output}
        if aggs:
            out = out.assign(**{f"user.{f}": v for f, v in _windowed(store, src, left, aggs).items()})
        wanted = [f for f in src.get("features", []) if f"user.{f}" in output]
        if not wanted:
            continue
        right = pq.read_table(store.root / src["path"]).to_pandas()
        right["ts"] = right["ts"].dt.tz_localize("UTC").astype(left["__ts__"].dtype)
        merged = pd.merge_asof(
            left.sort_values("__ts__"), right.sort_values("ts")[["user_id", "ts", *wanted]],
            left_on="__ts__", right_on="ts", left_by="user.id", right_by="user_id", direction="backward",
        ).sort_values("__row__")
        for f in wanted:
            out[f"user.{f}"] = merged[f].to_numpy()
    return out[["user.id", *output]].reset_index(drop=True)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_FUNCS = {
    "sum": lambda v: v.sum() if len(v) else np.nan, "count": len, "mean": lambda v: v.mean() if len(v) else np.nan,
    "min": lambda v: v.min() if len(v) else np.nan, "max": lambda v: v.max() if len(v) else np.nan,
    "count_distinct": lambda v: len(np.unique(v)),
}


def _windowed(store: SampleStore, src: dict, left: pd.DataFrame, aggs: dict) -> dict[str, list]:
    """Brute force, row by row: events of the same key with t - window < ts <= t."""
    events = pq.read_table(store.root / src["path"]).to_pandas()
    events["ts"] = events["ts"].dt.tz_localize("UTC").astype(left["__ts__"].dtype)
    by_key = {k: g.sort_values("ts") for k, g in events.groupby(src["key"])}
    out: dict[str, list] = {f: [] for f in aggs}
    for key, t in zip(left["user.id"], left["__ts__"], strict=True):
        group = by_key.get(key)
        for f, a in aggs.items():
            window = pd.Timedelta(seconds=int(a["window"][:-1]) * _UNITS[a["window"][-1]])
            rows = group[(group["ts"] > t - window) & (group["ts"] <= t)] if group is not None else events.iloc[:0]
            values = rows[a["column"]].to_numpy() if a.get("column") else rows["ts"].to_numpy()
            out[f].append(_FUNCS[a["function"]](values))
    return out


def assert_same(result: pd.DataFrame, expected: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(result.reset_index(drop=True), expected, check_dtype=False)
