"""Offline-query benchmark: our consumer path vs raw DuckDB SQL vs pandas `merge_asof`, side by side.

    python bench/offline_query.py                  # 2M ids x 10 snapshots = 20M feature rows, 2M input rows
    python bench/offline_query.py --ids 200000     # a quick run
    python bench/offline_query.py --ids 4000000 --input-rows 4000000 --only-capped --capped-runs 5

Each variant runs in its own child process, so its wall time and peak RSS (from wait4) are its
own. The same query then runs through our path again under a container memory cap (default
500 MB; DuckDB gets JOBQUEUE_QUERY_MEMORY_LIMIT_PERCENT of it), and must spill instead of failing:
`--capped-runs` times, each counted in `capped_successes` (a run that needed the consumer's
out-of-memory retry succeeds, and is counted in `capped_oom_retries` too).
All variants answer the same point-in-time question; their results are cross-checked.
The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FEATURES = ["f0", "f1", "f2", "f3"]
OUTPUT = [f"user.{f}" for f in FEATURES]
AGGREGATIONS = {
    "txn_sum_30d": {"function": "sum", "column": "amount", "window": "30d"},
    "txn_count_7d": {"function": "count", "window": "7d"},
    "merchants_30d": {"function": "count_distinct", "column": "merchant", "window": "30d"},
}
AGG_OUTPUT = [f"user.{f}" for f in AGGREGATIONS]


def generate(data: Path, ids: int, snapshots: int, input_rows: int) -> None:
    """Feature rows (shuffled, several files), a registry, and a staged input like the SDK writes."""
    from jobqueue.inputs import to_arrow, with_times
    from jobqueue.sample import _timestamps, sample_input

    rng = np.random.default_rng(1)
    src = data / "features"
    src.mkdir(parents=True, exist_ok=True)
    n = ids * snapshots
    order = rng.permutation(n)
    user_ids = np.repeat(np.arange(ids, dtype=np.int64), snapshots)[order]
    ts = _timestamps(rng, ids, snapshots)[order]
    for i, part in enumerate(np.array_split(np.arange(n), 8)):
        table = pa.table({
            "user_id": user_ids[part], "ts": pa.array(ts[part], type=pa.timestamp("us")),
            **{f: rng.random(len(part)) for f in FEATURES},
        })
        pq.write_table(table, src / f"part-{i}.parquet", row_group_size=1 << 20)
    events = data / "events"
    events.mkdir(exist_ok=True)
    for i, part in enumerate(np.array_split(np.arange(n), 8)):  # as many events as feature rows
        pq.write_table(pa.table({
            "user_id": user_ids[part], "ts": pa.array(ts[part], type=pa.timestamp("us")),
            "amount": np.round(rng.exponential(40.0, len(part)), 2), "merchant": rng.integers(0, 500, len(part)),
        }), events / f"part-{i}.parquet", row_group_size=1 << 20)
    (data / "registry.yaml").write_text(yaml.safe_dump({"namespaces": {"user": {"primary_key": "id", "sources": [
        {"name": "features", "path": str(src), "key": "user_id", "timestamp": "ts", "features": FEATURES},
        {"name": "events", "path": str(events), "key": "user_id", "timestamp": "ts", "aggregations": AGGREGATIONS},
    ]}}}))
    inp, times = sample_input(ids, input_rows, seed=2)
    staged = with_times(to_arrow(inp), times, datetime.now(UTC))
    pq.write_table(staged, data / "input.parquet")
    (data / "READY").write_text(json.dumps({"ids": ids, "snapshots": snapshots, "input_rows": input_rows}))


def run_ours(data: Path, out: Path, container_bytes: int | None, output: list[str] = OUTPUT) -> dict:
    from jobqueue.engine.execute import PreparedQuery
    from jobqueue.models import QueryJob
    from jobqueue.registry import load_registry
    from jobqueue.settings import Settings

    settings = Settings(
        home=out.parent, results_uri=str(out.parent / "results"), spill_directory=out.parent / "spill",
        container_memory_bytes=container_bytes,
    )
    job = QueryJob(
        job_id=f"bench-{out.stem}", environment="bench", resource_group="default", output=output,
        input_uri=str(data / "input.parquet"), input_columns=["user.id"],
        input_rows=pq.ParquetFile(data / "input.parquet").metadata.num_rows, submitted_at=datetime.now(UTC),
    )
    t0 = time.perf_counter()
    outcome = PreparedQuery(job, load_registry(data / "registry.yaml"), settings, "bench").execute()
    seconds = time.perf_counter() - t0
    Path(outcome.result_uri).replace(out)
    s = outcome.summary
    return {"seconds": seconds, "spilled_bytes": s.spilled_bytes, "memory_limit_bytes": s.memory_limit_bytes,
            "threads": s.threads, "oom_retries": s.oom_retries}


def run_raw(data: Path, out: Path) -> dict:
    import duckdb

    con = duckdb.connect()
    cols = ", ".join(f"f.{f} AS \"user.{f}\"" for f in FEATURES)
    t0 = time.perf_counter()
    con.execute(f"""
        COPY (
            SELECT i."user.id", {cols}
            FROM read_parquet('{data / "input.parquet"}') i
            ASOF LEFT JOIN read_parquet('{data / "features"}/*.parquet') f
              ON i."user.id" = f.user_id AND i.__ts__ >= f.ts
            ORDER BY i.__row__
        ) TO '{out}' (FORMAT parquet, COMPRESSION zstd)""")
    return {"seconds": time.perf_counter() - t0}


def run_pandas(data: Path, out: Path) -> dict:
    import pandas as pd

    t0 = time.perf_counter()
    left = pd.read_parquet(data / "input.parquet")
    right = pd.read_parquet(data / "features")
    right["ts"] = right["ts"].dt.tz_localize("UTC").astype(left["__ts__"].dtype)
    merged = pd.merge_asof(
        left.sort_values("__ts__"), right.sort_values("ts"), left_on="__ts__", right_on="ts",
        left_by="user.id", right_by="user_id", direction="backward",
    ).sort_values("__row__")
    result = merged[["user.id", *FEATURES]].rename(columns={f: f"user.{f}" for f in FEATURES})
    result.to_parquet(out, compression="zstd", index=False)
    return {"seconds": time.perf_counter() - t0}


def child(mode: str, data: Path, out: Path, cap: int | None) -> None:
    runners = {
        "ours": lambda: run_ours(data, out, None), "raw": lambda: run_raw(data, out),
        "pandas": lambda: run_pandas(data, out), "capped": lambda: run_ours(data, out, cap),
        "agg_capped": lambda: run_ours(data, out, cap, AGG_OUTPUT),
    }
    result = runners[mode]()
    result["peak_rss_bytes"] = peak_rss_bytes()
    print(json.dumps(result))


def peak_rss_bytes() -> int:
    """This process's own peak RSS (VmHWM). Not ru_maxrss: after vfork+exec Linux carries the
    parent's high-water mark into the child's ru_maxrss, which would charge it the parent's memory."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def measure(mode: str, data: Path, work: Path, cap: int, may_fail: bool = False) -> dict:
    """Run one variant in a child process. A failure ends the bench, unless `may_fail`: then it is
    returned as {"ok": False, "error": ...}."""
    out = work / f"{mode}.parquet"
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", mode, "--data", str(data), "--out", str(out), "--cap-bytes", str(cap)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "JOBQUEUE_QUERY_THREADS": str(os.cpu_count())},
    )
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        lines = stderr.decode(errors="replace").strip().splitlines() or [f"exit code {proc.returncode}"]
        print(f"{mode:>7}: FAILED {lines[-1][:300]}", flush=True)
        if not may_fail:
            sys.stderr.write(stderr.decode(errors="replace"))
            raise SystemExit(f"{mode} failed with exit code {proc.returncode}")
        return {"ok": False, "error": lines[-1][:300]}
    result = {"ok": True, **json.loads(stdout.decode().strip().splitlines()[-1])}
    print(f"{mode:>7}: {result['seconds']:7.2f}s  peak RSS {result['peak_rss_bytes'] / 2**20:8.1f} MiB"
          + (f"  spilled {result['spilled_bytes'] / 2**20:.1f} MiB" if "spilled_bytes" in result else "")
          + (f"  oom_retries {result['oom_retries']}" if result.get("oom_retries") else ""), flush=True)
    return result


def capped_figures(runs: list[dict], cap: int) -> dict:
    """Every capped run's outcome, how many succeeded, and the median successful one (worst RSS of all)."""
    ok = [r for r in runs if r["ok"]]
    figures: dict = {
        "cap_bytes": cap,
        "capped_runs": len(runs),
        "capped_successes": len(ok),
        "capped_oom_retries": sum(r["oom_retries"] for r in ok),
        "capped_outcomes": [
            {"ok": True, "seconds": round(r["seconds"], 3), "spilled_bytes": r["spilled_bytes"],
             "rss_over_cap": round(r["peak_rss_bytes"] / cap, 3), "oom_retries": r["oom_retries"]}
            if r["ok"] else {"ok": False, "error": r["error"]}
            for r in runs
        ],
    }
    if ok:
        capped = median_run(ok)
        figures.update({
            "capped_memory_limit_bytes": capped["memory_limit_bytes"],
            "capped_threads": capped["threads"],
            "capped_seconds": round(capped["seconds"], 3),
            "capped_peak_rss_bytes": capped["peak_rss_bytes"],
            "capped_rss_over_cap": round(capped["peak_rss_bytes"] / cap, 3),
            "capped_spilled_bytes": capped["spilled_bytes"],
        })
    return figures


def median_run(results: list[dict]) -> dict:
    """The run with the median wall time; peak RSS is the worst seen over all runs."""
    ordered = sorted(results, key=lambda r: r["seconds"])
    return {**ordered[len(ordered) // 2], "peak_rss_bytes": max(r["peak_rss_bytes"] for r in results)}


def fingerprint(path: Path) -> tuple[int, list[float], list[int]]:
    t = pq.read_table(path)
    return (t.num_rows, [round(float(pa.compute.sum(t[c]).as_py() or 0), 3) for c in OUTPUT],
            [t[c].null_count for c in OUTPUT])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ids", type=int, default=2_000_000)
    p.add_argument("--snapshots", type=int, default=10)
    p.add_argument("--input-rows", type=int, default=2_000_000)
    p.add_argument("--cap-mb", type=int, default=500)
    p.add_argument("--repeat", type=int, default=3, help="rounds; the median run of each variant is reported")
    p.add_argument("--capped-runs", type=int, default=5,
                   help="runs of the capped variant; capped_successes counts those that succeed")
    p.add_argument("--only-capped", action="store_true", help="run the capped variant alone (--capped-runs times)")
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "jobqueue-bench")
    p.add_argument("--child")
    p.add_argument("--data", type=Path)
    p.add_argument("--out", type=Path)
    p.add_argument("--cap-bytes", type=int)
    args = p.parse_args()
    if args.child:
        return child(args.child, args.data, args.out, args.cap_bytes)

    data = args.cache / f"v2-ids{args.ids}-s{args.snapshots}-in{args.input_rows}"
    if not (data / "READY").exists():
        print(f"generating {args.ids * args.snapshots:,} feature rows and {args.input_rows:,} input rows in {data}")
        generate(data, args.ids, args.snapshots, args.input_rows)
    work = data / "runs"
    work.mkdir(exist_ok=True)
    cap = args.cap_mb * 1000 * 1000
    print(f"{args.ids * args.snapshots:,} feature rows, {args.input_rows:,} input rows, {os.cpu_count()} threads")
    sizes = {"feature_rows": args.ids * args.snapshots, "input_rows": args.input_rows}
    capped_runs = []
    for i in range(args.capped_runs):
        print(f"capped run {i + 1}/{args.capped_runs}")
        capped_runs.append(measure("capped", data, work, cap, may_fail=True))
    capped = capped_figures(capped_runs, cap)
    if args.only_capped:
        print(json.dumps({**sizes, **capped}))
        return
    runs: dict[str, list[dict]] = {m: [] for m in ("ours", "raw", "pandas")}
    for i in range(args.repeat):  # interleaved, so drift on the machine hits every variant alike
        print(f"round {i + 1}/{args.repeat}")
        for mode in runs:
            runs[mode].append(measure(mode, data, work, cap))
    ours, raw, pandas_ = (median_run(runs[m]) for m in ("ours", "raw", "pandas"))
    agg = measure("agg_capped", data, work, cap)  # windowed aggregations, same cap
    compared = ("ours", "raw", "pandas", "capped") if capped["capped_successes"] else ("ours", "raw", "pandas")
    prints = {m: fingerprint(work / f"{m}.parquet") for m in compared}
    agree = len({json.dumps(v) for v in prints.values()}) == 1
    print(f"results agree across {', '.join(compared)}: {agree}")
    figures = {
        **sizes,
        "ours_seconds": round(ours["seconds"], 3),
        "raw_duckdb_seconds": round(raw["seconds"], 3),
        "pandas_seconds": round(pandas_["seconds"], 3),
        "ours_over_raw_duckdb": round(ours["seconds"] / raw["seconds"], 3),
        "pandas_over_ours": round(pandas_["seconds"] / ours["seconds"], 3),
        "ours_peak_rss_bytes": ours["peak_rss_bytes"],
        "raw_duckdb_peak_rss_bytes": raw["peak_rss_bytes"],
        "pandas_peak_rss_bytes": pandas_["peak_rss_bytes"],
        **capped,
        "results_agree": agree,
        "agg_capped_seconds": round(agg["seconds"], 3),
        "agg_capped_peak_rss_bytes": agg["peak_rss_bytes"],
        "agg_capped_rss_over_cap": round(agg["peak_rss_bytes"] / cap, 3),
        "agg_capped_spilled_bytes": agg["spilled_bytes"],
        "agg_capped_oom_retries": agg["oom_retries"],
        "repeat": args.repeat,
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
