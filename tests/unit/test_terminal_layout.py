"""Pure layout helpers of the 80-column work: console log lines broken at spaces (colour codes count as no
width), paths broken after slashes, columns padded. No I/O."""

from __future__ import annotations

import re

import structlog

from jobqueue.cli.layout import aligned, break_path
from jobqueue.logs import wrap_ansi

ANSI = re.compile(r"\x1b\[[0-9;]*m")
GROUP = "feature-backfill-nightly-eu-west-large-a"


def _plain(text: str) -> list[str]:
    return ANSI.sub("", text).split("\n")


def test_a_console_log_line_breaks_between_words_and_keeps_its_colours():
    render = structlog.dev.ConsoleRenderer(colors=True)
    line = render(None, "info", {"event": "consumer started", "level": "info", "logger": "jobqueue.manager.local",
                                 "timestamp": "2026-12-02T14:54:20.793621Z", "group": GROUP, "pid": 12274,
                                 "consumer_id": f"{GROUP}-11738-3", "slot": f"{GROUP}-0"})
    wrapped = wrap_ansi(line, 80)
    lines = _plain(wrapped)
    assert len(lines) > 1 and all(len(x) <= 80 for x in lines), lines
    assert all(x.startswith("    ") for x in lines[1:]), lines  # continuation lines are indented
    words = ANSI.sub("", line).split()
    assert [w for x in lines for w in x.split()] == words  # every word whole, in order, none lost
    assert ANSI.findall(wrapped) == ANSI.findall(line)  # every colour code kept


def test_short_lines_stay_and_a_word_longer_than_a_line_is_cut_only_at_the_line_end():
    assert wrap_ansi("short line", 80) == "short line"
    assert wrap_ansi("  indented\nsecond", 80) == "  indented\nsecond"
    long = "x=" + "a" * 100
    lines = wrap_ansi(f"event {long} tail", 40).split("\n")
    assert all(len(x) <= 40 for x in lines) and "".join("".join(x.split()) for x in lines) == f"event{long}tail"
    assert lines[0] == "event" and lines[1] == "    " + long[:36]  # the long word starts its own line


def test_a_path_breaks_after_slashes_and_never_inside_a_name():
    job = "24dc63d5920d48fdb5d8f21c99a091bd"
    path = f"/tmp/cols80-cap/home/results/cap-cols80/{job}/result.parquet"
    broken = break_path(path, 50)
    assert broken.replace("\n", "") == path and all(len(x) <= 50 for x in broken.split("\n"))
    assert any(job in x for x in broken.split("\n"))
    assert break_path("s3://bucket/x", 50) == "s3://bucket/x"


def test_aligned_pads_each_column_to_its_widest_cell():
    assert aligned([["a", "12"], ["bbb", "3"]], right=frozenset({1})) == ["a    12", "bbb   3"]
