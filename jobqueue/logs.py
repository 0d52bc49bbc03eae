"""structlog set-up: JSON lines in production, readable output in a terminal.

Context (job_id, resource_group, consumer_id, and the job's attribution: owner, team, tags, query_name,
correlation_id) is bound with `structlog.contextvars`, so every line logged while a job runs carries its id
and whose it is. Standard-library loggers (arq, asyncio) are routed
through the same renderer.

In a terminal, each console line is broken at spaces to the terminal's width (`wrap_ansi`), its
continuation indented, so that the terminal never wraps it inside a word, an id or a group name.

Error text is capped (`capped`, `MAX_ERROR_BYTES`) wherever it is logged or stored in a job record: a
500 KB feature name in a query must not become a megabyte log line, or a megabyte record.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Callable, MutableMapping
from typing import Any, Literal, TextIO

import structlog

MAX_ERROR_BYTES = 4096


def capped(text: str, limit: int = MAX_ERROR_BYTES) -> str:
    """`text` cut to at most `limit` bytes of UTF-8, saying how much was cut."""
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) <= limit:
        return text
    keep = raw[: max(0, limit - 32)].decode("utf-8", "ignore")
    return f"{keep}… ({len(raw) - len(keep.encode('utf-8', 'surrogatepass'))} bytes cut)"


def cap_values(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: every string value of a log line is `capped`; a traceback line by line."""
    for key, value in event.items():
        if isinstance(value, str) and len(value) > MAX_ERROR_BYTES // 4:
            if key == "exception":
                event[key] = capped("\n".join(capped(line) for line in value.split("\n")), 8 * MAX_ERROR_BYTES)
            else:
                event[key] = capped(value)
    return event


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_PIECES = re.compile(r" +|[^ ]+")


def visible_len(text: str) -> int:
    return len(_ANSI.sub("", text))


def wrap_ansi(text: str, width: int, indent: int = 4) -> str:
    """`text` (which may carry ANSI colour codes) broken at spaces so that no line shows more than `width`
    characters; continuation lines are indented by `indent`. A word longer than a line is cut at the line's
    end, the only place a word is ever broken."""
    return "\n".join(_wrap_line(line, width, indent) for line in text.split("\n"))


def _wrap_line(line: str, width: int, indent: int) -> str:
    if visible_len(line) <= width or width <= indent + 8:
        return line
    out, current, used, space = [], "", 0, ""
    for piece in _PIECES.findall(line):
        if piece.startswith(" "):
            current, used, space = (current, used, piece) if current else (piece, len(piece), "")  # keep an indent
            continue
        size = visible_len(piece)
        if current.strip() and used + len(space) + size > width:
            out.append(current)
            current, used = " " * indent, indent
        elif current.strip():
            current, used = current + space, used + len(space)
        space = ""
        while used + size > width:  # longer than a whole line: cut it at the line's end
            head, piece = _split_visible(piece, width - used)
            out.append(current + head)
            current, used, size = " " * indent, indent, visible_len(piece)
        current, used = current + piece, used + size
    return "\n".join([*out, current])


def _split_visible(text: str, n: int) -> tuple[str, str]:
    """`text` cut after its first `n` visible characters (colour codes count as none)."""
    seen, i = 0, 0
    while i < len(text) and seen < n:
        code = _ANSI.match(text, i)
        if code:
            i = code.end()
        else:
            seen, i = seen + 1, i + 1
    return text[:i], text[i:]


def terminal_columns(stream: TextIO) -> int | None:
    """The width of the terminal `stream` writes to (`COLUMNS` overrides it), or None when it is no terminal."""
    try:
        if not stream.isatty():
            return None
        columns = os.environ.get("COLUMNS", "")
        return int(columns) if columns.isdigit() else os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError):
        return None


class TerminalWrap:
    """structlog renderer: `inner`'s line, broken at spaces to the terminal's width (`wrap_ansi`), measured on
    every line so a resized terminal is followed; unchanged when the output is no terminal."""

    def __init__(self, inner: Callable[[Any, str, MutableMapping[str, Any]], str],
                 columns: Callable[[], int | None]) -> None:
        self.inner, self.columns = inner, columns

    def __call__(self, logger: Any, name: str, event: MutableMapping[str, Any]) -> str:
        line, width = self.inner(logger, name, event), self.columns()
        return wrap_ansi(line, width) if width else line


def configure_logging(fmt: Literal["auto", "json", "console"] = "auto", level: str = "info") -> None:
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        cap_values,
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if use_json
        else TerminalWrap(structlog.dev.ConsoleRenderer(colors=True), lambda: terminal_columns(sys.stderr))
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info if use_json else structlog.processors.StackInfoRenderer(),
            cap_values,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,  # keeps reconfiguration (tests, CLI) effective everywhere
    )


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.stdlib.get_logger(name)
