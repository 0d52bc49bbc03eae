"""What the node tier measured, printed as each figure comes and once more, all together, at the session's end.

Its own module, imported as `tests.node.timings` by the `node` fixture and by the tests alike: pytest loads
tests/node/conftest.py as the module `conftest`, and a test's `from tests.node.conftest import ...` loads a second
copy of it, whose dict the session's summary never saw.
"""

from __future__ import annotations

TIMES: dict[str, float] = {}


def record(name: str, seconds: float) -> None:
    TIMES[name] = seconds
    print(f"[node tier] {name}: {seconds:.2f} s", flush=True)
