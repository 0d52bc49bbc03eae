"""structlog set-up: JSON lines in production, readable output in a terminal.

Context (job_id, resource_group, consumer_id, and the job's attribution: owner, team, tags, query_name,
correlation_id) is bound with `structlog.contextvars`, so every line logged while a job runs carries its id
and whose it is. Standard-library loggers (arq, asyncio) are routed
through the same renderer.

Error text is capped (`capped`, `MAX_ERROR_BYTES`) wherever it is logged or stored in a job record: a
500 KB feature name in a query must not become a megabyte log line, or a megabyte record.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, Literal

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
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=True)
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
