"""Sparklines of a group's last hour, drawn as inline SVG on the server (the Content-Security-Policy allows no
inline script or style: the lines are SVG attributes, their colours classes of the stylesheet). Each comes with
its text alternative, which is also its `<title>` and `aria-label`. Pure: no I/O (the time is an argument).

    line = sparkline(samples, lambda s: s.consumers, now, "consumers")
    line.points   # "0.0,28.0 12.5,4.0 ..." for <polyline points=...>; "" when there is no sample
    line.text     # "consumers over the last hour: peak 2, now 0 (61 samples)"
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from jobqueue.group_samples import HISTORY_WINDOW_SECONDS, GroupSample

WIDTH, HEIGHT, PAD = 120.0, 28.0, 2.0


@dataclass(frozen=True)
class Sparkline:
    points: str  # polyline points in a WIDTH x HEIGHT box; "" for no samples
    peak: int
    latest: int | None
    text: str  # the text alternative
    width: float = WIDTH
    height: float = HEIGHT


def _x(at: float, start: float, window: float) -> float:
    return round(min(max((at - start) / window, 0.0), 1.0) * WIDTH, 1)


def _y(value: int, peak: int) -> float:
    return round(HEIGHT - PAD - (value / peak) * (HEIGHT - 2 * PAD), 1) if peak else HEIGHT - PAD


def sparkline(samples: list[GroupSample], value: Callable[[GroupSample], int], now: float, what: str,
              window: float = HISTORY_WINDOW_SECONDS) -> Sparkline:
    """A step line of `value` of each sample (oldest first) over the `window` seconds before `now`: time along,
    the count up, scaled to its peak (a flat line at the bottom when every value is 0)."""
    start = now - window
    shown = [s for s in samples if s.at >= start - 1e-9]
    if not shown:
        return Sparkline("", 0, None, f"{what} over the last hour: no samples yet (the manager writes one every "
                         "JOBQUEUE_GROUP_HISTORY_SECONDS)")
    values = [value(s) for s in shown]
    peak = max(values)
    columns: dict[int, tuple[float, int]] = {}  # at most one step per unit of width (the peak of its samples)
    for sample, v in zip(shown, values, strict=True):
        x = _x(sample.at, start, window)
        first = columns.get(int(x))
        columns[int(x)] = (first[0], max(first[1], v)) if first else (x, v)
    steps = list(columns.values())
    points: list[str] = []
    for i, (x0, v) in enumerate(steps):
        x1 = steps[i + 1][0] if i + 1 < len(steps) else max(x0 + 1.0, _x(now, start, window))
        y = _y(v, peak)
        points += [f"{x0},{y}", f"{min(x1, WIDTH)},{y}"]
    text = (f"{what} over the last hour: peak {peak}, now {values[-1]} "
            f"({len(shown)} sample{'s' if len(shown) != 1 else ''})")
    return Sparkline(" ".join(points), peak, values[-1], text)
