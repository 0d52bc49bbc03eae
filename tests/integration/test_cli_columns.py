"""The CLI in an 80-column (and a 160-column) terminal: no line is wider, no id or group name is cut.

Real parts: the manager with the local backend publishes the groups, a real consumer process runs a job on a
group with a 40-character name, another waits on a paused group; the CLI runs as a user runs it, with COLUMNS
set (rich sizes its output by it), and `jobqueue up` and `jobqueue jobs logs` run in a real pseudo-terminal of
80 columns, where a line the program does not break itself is wrapped by the terminal inside a word.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobqueue import AsyncJobQueueClient, JobStatus, ResourceRequests
from jobqueue.keys import MANAGER_TICK_AT
from tests.helpers import eventually, running_manager, with_groups

LONG = "feature-backfill-nightly-eu-west-large-a"  # 40 characters: the longest group name allowed
PAUSED = "paused-analytics-team-reprocessing-queue"
GROUPS = {LONG: {"max_instances": 1}, PAUSED: {"max_instances": 0}}
on = lambda group: ResourceRequests(resource_group=group)  # noqa: E731
ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def cli(redis_url: str, environment: str, home: Path, columns: int, *args: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBQUEUE_")}
    env.update(JOBQUEUE_REDIS_URL=redis_url, JOBQUEUE_ENVIRONMENT=environment, JOBQUEUE_HOME=str(home),
               COLUMNS=str(columns))
    p = subprocess.run([sys.executable, "-m", "jobqueue.cli.main", *args], env=env, capture_output=True,
                       text=True, timeout=60, stdin=subprocess.DEVNULL)
    return p.returncode, p.stdout + p.stderr


def assert_fits(out: str, columns: int, *whole: str) -> None:
    """No line wider than `columns`; every string of `whole` on one line, uncut."""
    wide = [line for line in out.splitlines() if len(line) > columns]
    assert not wide, f"{len(wide)} line(s) wider than {columns}:\n" + "\n".join(wide) + "\n---\n" + out
    missing = [w for w in whole if w not in out]
    assert not missing, f"cut or missing: {missing}\n{out}"


@pytest.fixture
async def jobs(settings, tmp_path) -> tuple[str, str]:
    """A succeeded job on the 40-character group and a queued one on the paused group; the manager has
    published both groups (the CLI reads them afterwards, with the manager stopped)."""
    settings = with_groups(settings, tmp_path, GROUPS)
    async with running_manager(settings), AsyncJobQueueClient(settings) as client:
        done = await client.offline_query({"user.id": [1, 2]}, ["user.f0"], resources=on(LONG))
        waiting = await client.offline_query({"user.id": [3]}, ["user.f0"], resources=on(PAUSED))
        assert (await done.wait(timeout=120, show_progress=False)).status is JobStatus.SUCCEEDED

        async def published() -> bool:
            states = await client.store.redis.hgetall(client.store.keys.group_states)
            return {LONG.encode(), PAUSED.encode()} <= set(states)

        await eventually(published, what="the manager publishing both groups")
    async with AsyncJobQueueClient(settings) as client:  # the manager has stopped: its last tick a minute ago
        await client.store.redis.hset(client.store.keys.manager_state, MANAGER_TICK_AT, str(time.time() - 60))
    return done.id, waiting.id


@pytest.mark.parametrize("columns", [80, 160])
async def test_status_jobs_and_show_fit_the_terminal(jobs, redis_url, environment, tmp_path, columns):
    done, waiting = jobs
    run = lambda *a: cli(redis_url, environment, tmp_path, columns, *a)  # noqa: E731

    code, out = run("status")
    assert code == 0, out
    groups = out.split("\nmanager:")[0]  # the table or cards; the detail lines below name each group again
    assert_fits(out, columns)
    assert_fits(groups, columns, LONG, PAUSED, "default")
    assert ("consumers  desired" in out) is (columns == 80), out  # the table where it fits, else a card per group

    code, out = run("jobs")
    assert code == 0, out
    assert_fits(out, columns, done, waiting, LONG, PAUSED)
    row = next(line for line in out.splitlines() if done in line)
    assert ("succeeded" in row) and ((LONG in row) is (columns == 160)), out  # a second line per job at 80

    for job, group in ((done, LONG), (waiting, PAUSED)):
        code, out = run("jobs", "show", job)
        assert code == 0, out
        assert_fits(out, columns, job, group)
        assert f"job {job}" in out, out  # a card
    assert "waits" in out and "no manager has ticked" in " ".join(out.split()), out  # the queued job says why
    code, out = run("jobs", "show", done)
    assert "performance summary" in out and "result" in out and "spilled_bytes" in out, out


def _terminal(columns: int) -> tuple[int, int]:
    """A pseudo-terminal `columns` wide: (our end, the program's end)."""
    ours, theirs = os.openpty()
    fcntl.ioctl(theirs, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    return ours, theirs


@contextlib.contextmanager
def in_terminal(args: list[str], env: dict[str, str], columns: int) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """`args` running in a pseudo-terminal `columns` wide; yields the process and our end of the terminal (read it
    with `read_screen`). A process still running on exit is interrupted (SIGINT, as Ctrl-C) and waited for."""
    ours, theirs = _terminal(columns)
    env = {**{k: v for k, v in env.items() if k != "COLUMNS"}, "TERM": "xterm-256color"}
    process = subprocess.Popen(args, env=env, stdin=theirs, stdout=theirs, stderr=theirs, start_new_session=True)
    os.close(theirs)
    try:
        yield process, ours
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        os.close(ours)


def read_screen(fd: int, screen: list[str], wait: float) -> str:
    """Append what the program wrote (escapes removed, terminal line ends as \\n) to `screen[0]`."""
    deadline = time.monotonic() + wait
    while (left := deadline - time.monotonic()) > 0 and select.select([fd], [], [], left)[0]:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the program closed its end
            break
        if not chunk:
            break
        screen[0] += ESCAPES.sub("", chunk.decode("utf-8", "replace")).replace("\r\n", "\n")
    return screen[0]


def _env(redis_url: str, environment: str, home: Path, groups: Path, registry: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBQUEUE_")}
    env.update(JOBQUEUE_REDIS_URL=redis_url, JOBQUEUE_ENVIRONMENT=environment, JOBQUEUE_HOME=str(home),
               JOBQUEUE_RESOURCE_GROUPS_PATH=str(groups), JOBQUEUE_REGISTRY_PATH=str(registry),
               JOBQUEUE_MANAGER_HTTP_PORT="0", JOBQUEUE_MANAGER_TICK_SECONDS="0.1")  # log format auto: the
    return env  # manager's lines go to the terminal in console format, the consumers' to their files as JSON


async def test_console_log_lines_break_at_spaces_in_80_columns(settings, redis_url, environment, tmp_path):
    """`jobqueue up` logs in console format to an 80-column terminal: the manager's lines about the 40-character
    group (its start, the scaling, the consumer it starts) break at spaces, as do `jobqueue jobs logs` lines."""
    settings = with_groups(settings, tmp_path, GROUPS)
    env = _env(redis_url, environment, settings.home, settings.resource_groups_path, settings.registry_path)
    jobqueue = [sys.executable, "-m", "jobqueue.cli.main"]
    screen = [""]
    with in_terminal([*jobqueue, "up"], env, 80) as (_, fd):
        await eventually(lambda: "ops server listening" in read_screen(fd, screen, 0.1), 60, "`jobqueue up` started")
        async with AsyncJobQueueClient(settings) as client:
            job = await client.offline_query({"user.id": [1]}, ["user.f0"], resources=on(LONG))
            assert (await job.wait(timeout=120, show_progress=False)).status is JobStatus.SUCCEEDED
        await eventually(lambda: "consumer started" in read_screen(fd, screen, 0.1), 30, "the consumer's start")
        read_screen(fd, screen, 0.3)
    assert "manager started" in screen[0] and "scaling" in screen[0], screen[0]
    assert_fits(screen[0], 80, f"group={LONG}", f"'{LONG}'")

    lines = [""]
    with in_terminal([*jobqueue, "jobs", "logs", job.id], env, 80) as (process, fd):
        await eventually(lambda: process.poll() is not None, 60, "`jobqueue jobs logs` to finish")
        read_screen(fd, lines, 0.5)
    assert "job succeeded" in lines[0] and process.returncode == 0, lines[0]
    assert_fits(lines[0], 80, f"resource_group={LONG}")
