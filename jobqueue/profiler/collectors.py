"""Sampling collectors behind one Protocol: Linux `perf`, and py-spy where perf is not permitted.

Each capture samples the given processes for `seconds` and writes one gzip file:

- **perf** (`perf-data`): the text of `perf script` for `perf record -F <hz> [-g] -p <pids>`. One
  block per sample: command name (`jq-consumer`), pid, time, event, then the stack, innermost
  frame first. Native frames only (Python 3.11 has no perf trampoline); the process name tells
  which role it is. Feed it to `stackcollapse-perf.pl`, speedscope or Firefox Profiler.
- **py-spy** (`pyspy-folded`): for each process a header line
  `# pid=<pid> role=<role> collector=py-spy rate=<hz> seconds=<s>`, then py-spy's `raw` output:
  folded stacks (`frame;frame;frame <count>`), Python frames with native frames merged in
  (`--native`). py-spy pauses the process briefly for each sample to read native stacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Protocol

from jobqueue.preflight import PreflightError
from jobqueue.profiler.targets import Target


class CaptureError(RuntimeError):
    pass


class NoCollector(CaptureError, PreflightError):
    """No usable collector on this machine: the profiler exits at start-up (status 2) saying why."""


class Collector(Protocol):
    name: str
    kind: str  # the file name's suffix: `<timestamp>-<kind>.gz`

    async def capture(self, targets: list[Target], seconds: int, hz: int, call_graph: bool, out: Path) -> None:
        """Sample `targets` for `seconds` and write the gzip dump to `out`."""
        ...


async def _run(*cmd: str, timeout: float, stdout: int | None = asyncio.subprocess.DEVNULL) -> tuple[int, bytes, bytes]:
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=stdout, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except (TimeoutError, asyncio.CancelledError):
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out or b"", err or b""


class PerfCollector:
    name, kind = "perf", "perf-data"

    def __init__(self, perf: str = "perf") -> None:
        self.perf = perf

    async def probe(self) -> str | None:
        """None when `perf record` works here, else why not (not installed, not permitted)."""
        if shutil.which(self.perf) is None:
            return f"{self.perf} is not installed (Debian: linux-perf)"
        with tempfile.TemporaryDirectory() as tmp:
            try:
                code, _, err = await _run(self.perf, "record", "-F", "99", "-o", f"{tmp}/probe.data", "--", "true",
                                          timeout=30)
            except (OSError, TimeoutError) as e:
                return f"perf record failed to run: {e}"
        if code != 0:
            return "perf record is not permitted: " + " ".join(err.decode(errors="replace").split())[:300]
        return None

    async def capture(self, targets: list[Target], seconds: int, hz: int, call_graph: bool, out: Path) -> None:
        raw = out.with_name(out.name + ".data")
        try:
            code, _, err = await _run(
                self.perf, "record", "-F", str(hz), *(["-g"] if call_graph else []),
                "-p", ",".join(str(t.pid) for t in targets), "-o", str(raw), "--", "sleep", str(seconds),
                timeout=seconds + 60,
            )
            if code != 0 or not raw.exists():
                raise CaptureError("perf record: " + " ".join(err.decode(errors="replace").split())[:500])
            with out.open("wb") as f, gzip.GzipFile(fileobj=f, mode="wb") as gz:
                proc = await asyncio.create_subprocess_exec(
                    self.perf, "script", "-i", str(raw), stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.DEVNULL)
                assert proc.stdout is not None
                while chunk := await proc.stdout.read(1 << 20):
                    gz.write(chunk)
                if await proc.wait() != 0:
                    raise CaptureError(f"perf script exited {proc.returncode}")
        except BaseException:
            out.unlink(missing_ok=True)
            raise
        finally:
            raw.unlink(missing_ok=True)
            raw.with_name(raw.name + ".old").unlink(missing_ok=True)


def _beside_python(name: str) -> str:
    """`name` on PATH, else next to this interpreter (a virtualenv's bin/ that is not on PATH)."""
    beside = Path(sys.executable).parent / name
    return shutil.which(name) or (str(beside) if beside.exists() else name)


class PySpyCollector:
    name, kind = "py-spy", "pyspy-folded"

    def __init__(self, py_spy: str | None = None) -> None:
        self.py_spy = py_spy or _beside_python("py-spy")

    async def probe(self) -> str | None:
        if shutil.which(self.py_spy) is None:
            return f"{self.py_spy} is not installed (pip install 'jobqueue[profiler]')"
        return None

    async def _one(self, target: Target, seconds: int, hz: int, folded: Path) -> bytes | None:
        code, _, err = await _run(
            self.py_spy, "record", "--pid", str(target.pid), "--duration", str(seconds), "--rate", str(hz),
            "--format", "raw", "--native", "--output", str(folded), timeout=seconds + 60)
        if code != 0 or not folded.exists():
            return None  # the process exited meanwhile, or may not be traced: the others still count
        return folded.read_bytes()

    async def capture(self, targets: list[Target], seconds: int, hz: int, call_graph: bool, out: Path) -> None:
        with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
            stacks = await asyncio.gather(*(self._one(t, seconds, hz, Path(tmp) / f"{t.pid}.txt") for t in targets))
        if not any(stacks):
            raise CaptureError(f"py-spy sampled none of pids {[t.pid for t in targets]}")
        try:
            with out.open("wb") as f, gzip.GzipFile(fileobj=f, mode="wb") as gz:
                for target, folded in zip(targets, stacks, strict=True):
                    if folded is not None:
                        gz.write(f"# pid={target.pid} role={target.role} collector=py-spy rate={hz} "
                                 f"seconds={seconds}\n".encode())
                        gz.write(folded)
        except BaseException:
            out.unlink(missing_ok=True)
            raise


async def choose_collector(preference: str, perf: PerfCollector | None = None,
                           py_spy: PySpyCollector | None = None) -> tuple[Collector, str]:
    """The collector to use and why: perf where it works (unless py-spy is asked for), else py-spy."""
    perf, py_spy = perf or PerfCollector(), py_spy or PySpyCollector()
    if preference in ("auto", "perf"):
        why_not = await perf.probe()
        if why_not is None:
            return perf, "perf record is permitted"
        if preference == "perf":
            raise NoCollector(f"JOBQUEUE_PROFILER_COLLECTOR=perf, but {why_not}")
    else:
        why_not = "py-spy was asked for (JOBQUEUE_PROFILER_COLLECTOR=py-spy)"
    missing = await py_spy.probe()
    if missing is not None:
        raise NoCollector(f"no collector: {why_not}; and {missing}")
    return py_spy, f"falling back to py-spy: {why_not}"
