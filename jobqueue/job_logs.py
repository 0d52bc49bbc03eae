"""One job's consumer log lines, from the local consumers' JSON log files (`<JOBQUEUE_HOME>/logs/*.log`, written by
`jobqueue up`'s consumers): what `jobqueue jobs logs` prints and the console's job page shows. I/O: reads files.

    entries = job_log_entries(settings.home / "logs", job_id)    # oldest first; [] when none
    text = log_line(entry)                                      # `<time> <level> <event>  k=v ...`
"""

from __future__ import annotations

import json
from pathlib import Path

LOG_DIR = "logs"  # under JOBQUEUE_HOME
PLAIN = ("timestamp", "level", "event", "job_id")


def log_dir(home: Path) -> Path:
    return home / LOG_DIR


def reachable(home: Path) -> bool:
    """Whether this process can read local consumer logs at all (a `jobqueue up` home with a logs folder)."""
    return log_dir(home).is_dir()


def job_log_entries(directory: Path, job_id: str, limit: int | None = None) -> list[dict[str, object]]:
    """The JSON log entries of `job_id` in `directory/*.log`, oldest first (the last `limit` of them)."""
    found: list[dict[str, object]] = []
    for path in sorted(directory.glob("*.log")):
        with path.open(encoding="utf-8", errors="replace") as f:
            for line in f:
                if job_id not in line or not line.startswith("{"):
                    continue
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue  # a partly written last line, or a line of a library that is not JSON
                if isinstance(entry, dict) and entry.get("job_id") == job_id:
                    found.append(entry)
    found.sort(key=lambda e: str(e.get("timestamp", "")))
    return found[-limit:] if limit is not None else found


def log_line(entry: dict[str, object]) -> str:
    """One entry as one line: time, level, event, then the other fields as `key=value`."""
    rest = " ".join(f"{k}={v}" for k, v in entry.items() if k not in PLAIN)
    return f"{entry.get('timestamp', '-')} {entry.get('level', '-'):<7} {entry.get('event', '')}  {rest}"
