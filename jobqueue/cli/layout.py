"""Layouts that fit the terminal, whatever its width: ids and group names are never cut.

A screen offers a wide table and a narrower layout (fewer columns, a second line per row, or a card). The
table is used only when `fits`: every cell on one line, so rich has no reason to wrap or ellipsize an id;
otherwise the narrower layout is printed. `aligned` pads plain columns for those narrower layouts, and
`break_path` breaks a long path or URI at its slashes rather than inside a name.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console, RenderableType
from rich.measure import Measurement


def fits(console: Console, renderable: RenderableType) -> bool:
    """True if `renderable` needs no wrapping at the console's width: its natural (widest) width fits."""
    unbounded = console.options.update_width(1_000_000)  # measured within the console's width, all would fit
    return Measurement.get(console, unbounded, renderable).maximum <= console.width


def aligned(rows: Sequence[Sequence[str]], right: frozenset[int] = frozenset(), gap: int = 2) -> list[str]:
    """Each row as one line, its cells padded to the widest cell of their column (`right`: right-aligned)."""
    widths = [max((len(r[i]) for r in rows if i < len(r)), default=0) for i in range(max(map(len, rows), default=0))]
    lines = []
    for row in rows:
        cells = [c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(row)]
        lines.append((" " * gap).join(cells).rstrip())
    return lines


def break_path(path: str, width: int) -> str:
    """`path` with line breaks after slashes so that no line is longer than `width` (a part longer than
    `width` stays whole on its own line: rich folds it only if it must)."""
    first, *rest = path.split("/")
    lines, line = [], first
    for piece in ("/" + part for part in rest):
        if line and len(line) + len(piece) > width:
            lines.append(line)
            line = piece
        else:
            line += piece
    return "\n".join([*lines, line])
