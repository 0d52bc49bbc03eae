"""Benchmarks: each script prints its figures, the last line one JSON object."""


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (`q` in 0..1); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
