"""A real `jobqueue up` in a process of its own (embedded Valkey, manager, local consumers, API and console), in a
fresh JOBQUEUE_HOME, for the browser tests and the README's screenshots (docs/console/screenshots.py).

    with jobqueue_up(home, registry_path=store.registry_path, groups={"default": {"max_instances": 2}}) as up:
        up.url, up.token      # the API's URL (`<home>/api.url`) and `up`'s local admin token (`<home>/api.token`)
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.api_support import api_url_of
from tests.helpers import free_port

# Quick ticks, so that consumers start and stop within seconds (the demo's values).
QUICK = {"JOBQUEUE_MANAGER_TICK_SECONDS": "0.25", "JOBQUEUE_CONSUMER_POLL_SECONDS": "0.1",
         "JOBQUEUE_CONSUMER_HEARTBEAT_SECONDS": "0.5", "JOBQUEUE_SCALE_DOWN_STABILIZATION_SECONDS": "2",
         "JOBQUEUE_SCALE_TO_ZERO_COOLDOWN_SECONDS": "4"}


@dataclass(frozen=True)
class UpStack:
    url: str
    token: str
    home: Path
    log: Path


@contextlib.contextmanager
def jobqueue_up(home: Path, registry_path: Path, groups: dict[str, dict[str, Any]] | None = None,
                timeout: float = 120.0) -> Iterator[UpStack]:
    """`jobqueue up` with the embedded Valkey under `home`, the registry at `registry_path` and these resource
    groups; its output goes to `<home>/up.log` (a pipe nobody reads would fill and stop it). Stopped with SIGINT,
    as a person stops it, on exit; it must then exit cleanly."""
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBQUEUE_")}
    env.update(QUICK, JOBQUEUE_HOME=str(home), JOBQUEUE_ENVIRONMENT=f"up-{uuid.uuid4().hex[:8]}",
               JOBQUEUE_LOG_FORMAT="json", JOBQUEUE_REGISTRY_PATH=str(registry_path),
               JOBQUEUE_MANAGER_HTTP_PORT=str(free_port()), JOBQUEUE_API_PORT=str(free_port()))
    if groups is not None:
        path = home / "resource-groups.yaml"
        path.write_text(yaml.safe_dump({"resource_groups": groups}))
        env["JOBQUEUE_RESOURCE_GROUPS_PATH"] = str(path)
    log = home / "up.log"
    with log.open("w") as out:
        up = subprocess.Popen([sys.executable, "-m", "jobqueue.cli.main", "up"], env=env, cwd=home, text=True,
                              stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    try:
        try:
            url = api_url_of(up, home, timeout=timeout)
        except AssertionError as e:
            raise AssertionError(f"{e}\n`jobqueue up` said:\n{log.read_text()[-4000:]}") from None
        yield UpStack(url, (home / "api.token").read_text().strip(), home, log)
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(timeout=90)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait()
    assert up.returncode == 0, f"`jobqueue up` exited {up.returncode}:\n{log.read_text()[-4000:]}"
