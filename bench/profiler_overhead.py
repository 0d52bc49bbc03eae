"""What sampling costs a busy consumer: the same CPU-bound work alone, under `perf record -g`, and
under py-spy (`--native`), side by side in one run.

    python bench/profiler_overhead.py [--rounds 3] [--hz 99]

The work is a DuckDB aggregation plus a pure-Python loop (a consumer's two kinds of CPU), run in a
process named `jq-consumer`, as the profiler sees it. Rounds alternate between the three modes; the
median of each is compared. The last line is one JSON object with `perf_overhead_ratio` and
`py_spy_overhead_ratio` (time under the profiler / time alone).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import contextlib

from jobqueue.profiler.collectors import PerfCollector, PySpyCollector  # noqa: E402
from jobqueue.profiler.targets import Target  # noqa: E402

WORK = """
import sys, time
from jobqueue.profiler.targets import announce_role
announce_role("consumer")
import duckdb
con = duckdb.connect(); con.execute("SET threads=1")
print("ready", flush=True); sys.stdin.readline()
t = time.perf_counter()
for _ in range(6):
    con.execute("SELECT sum(i * 2 % 7), count(DISTINCT i % 1000) FROM range(6000000) t(i)").fetchall()
    sum(x * x for x in range(1_500_000))
print(time.perf_counter() - t, flush=True)
"""


async def one(mode: str, hz: int, tmp: Path) -> float:
    proc = subprocess.Popen([sys.executable, "-c", WORK], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin and proc.stdout and proc.stdout.readline() == "ready\n"
    collector = {"perf": PerfCollector(), "py-spy": PySpyCollector()}.get(mode)
    capture = None
    if collector is not None:  # sample for longer than the work takes; the work's own clock is what counts
        capture = asyncio.create_task(collector.capture([Target(proc.pid, "consumer")], 60, hz, True,
                                                        tmp / f"{mode}-{time.monotonic_ns()}.gz"))
        await asyncio.sleep(1.0)  # the collector has attached
    proc.stdin.write("go\n")
    proc.stdin.flush()
    elapsed = float(await asyncio.to_thread(proc.stdout.readline))
    proc.wait()
    if capture is not None:
        capture.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await capture
    return elapsed


async def main() -> dict[str, float]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--hz", type=int, default=99)
    args = parser.parse_args()
    modes = ["alone"]
    if await PerfCollector().probe() is None:
        modes.append("perf")
    if await PySpyCollector().probe() is None:
        modes.append("py-spy")
    times: dict[str, list[float]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for mode in modes:
                times[mode].append(await one(mode, args.hz, Path(tmp)))
    median = {m: statistics.median(v) for m, v in times.items()}
    for m in modes:
        print(f"{m:7s} median {median[m]:.3f} s  ({', '.join(f'{t:.3f}' for t in times[m])})")
    figures = {"hz": args.hz, "rounds": args.rounds, "alone_seconds": round(median["alone"], 3)}
    for m, key in (("perf", "perf_overhead_ratio"), ("py-spy", "py_spy_overhead_ratio")):
        if m in median:
            figures[key] = round(median[m] / median["alone"], 3)
    return figures


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
