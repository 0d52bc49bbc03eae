"""Human byte sizes (`512MiB`, `2GB`, `1048576`) parsed into ints, and the size up to which a query input is handled
on the event loop. Pure, no I/O."""

from __future__ import annotations

import re

_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3, "t": 1000**4, "tb": 1000**4,
    "ki": 1024, "kib": 1024, "mi": 1024**2, "mib": 1024**2, "gi": 1024**3, "gib": 1024**3,
    "ti": 1024**4, "tib": 1024**4,
}
# A query input up to this size is decoded, encoded or staged (local storage) on the event loop, and staged as plain
# Parquet: about a millisecond, less than a hop to a thread and back costs under load. A bigger one goes to a thread,
# so that the loop serves others meanwhile.
INLINE_INPUT_BYTES = 256 << 10
_SIZE_RE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_bytes(value: object) -> object:
    """Parse `value` into a byte count; leaves non-strings (ints, None) for pydantic to check."""
    return byte_count(value) if isinstance(value, str) else value


def byte_count(value: str) -> int:
    """`512MiB`, `2GB`, `1Gi`, `1024` -> bytes; anything else raises `ValueError` naming the forms."""
    m = _SIZE_RE.match(value)
    unit = m.group(2).lower() if m else None
    if not m or unit not in _UNITS:
        raise ValueError(f"{value!r} is not a size; use bytes or a unit such as 512MiB, 2GB, 1Gi")
    return int(float(m.group(1)) * _UNITS[unit])


def format_bytes(n: int | float) -> str:
    """Render a byte count for people: 1536 -> '1.5 KiB'."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
