"""The pandas `merge_asof` reference that results are checked against, row for row."""

from __future__ import annotations

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
        wanted = [f for f in src["features"] if f"user.{f}" in output]
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


def assert_same(result: pd.DataFrame, expected: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(result.reset_index(drop=True), expected, check_dtype=False)
